//! What a run measured: the report (table or JSON) and the progress bar.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::consumer::ConsumerResult;
use super::producer::ProducerResult;
use super::stats::{Latency, Percentiles};
use super::{End, Plan, RunCounters};

#[derive(Serialize)]
pub(super) struct Report {
    url: String,
    destination: String,
    producers: u32,
    consumers: u32,
    size_bytes: usize,
    persistent: bool,
    receipt_every: u64,
    ack: &'static str,
    prefetch: Option<u32>,
    /// `--selectors N`: consumer k selected `shard = 'k'` of N shards.
    selectors: Option<u32>,
    warmup_s: f64,
    /// Start of the run, µs since the Unix epoch.
    started_at_us: u64,
    /// Measured messages sent.
    sent: u64,
    /// Measured deliveries received (for a topic, summed over subscribers).
    received: u64,
    /// Deliveries expected.
    expected: u64,
    pub(super) missing: u64,
    /// Deliveries beyond those expected (leftovers of another run).
    extra: u64,
    /// Deliveries of a message a consumer (for a topic: that subscriber)
    /// had already received, e.g. resent or redelivered across a failover;
    /// not counted in `received`.
    duplicates: u64,
    /// Deliveries the broker flagged redelivered.
    redelivered: u64,
    /// From the end of the warm-up until the last producer's messages were
    /// all confirmed.
    send_duration_s: f64,
    /// From the end of the warm-up until the last measured delivery.
    receive_duration_s: f64,
    send_rate: f64,
    receive_rate: f64,
    receipt_latency_us: Option<Percentiles>,
    e2e_latency_us: Option<Percentiles>,
    pub(super) errors: Vec<String>,
    #[serde(skip)]
    receipts: Latency,
    #[serde(skip)]
    e2e: Latency,
    #[serde(skip)]
    sent_until: Option<Instant>,
    #[serde(skip)]
    received_until: Option<Instant>,
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

impl Report {
    pub(super) fn new(plan: &Plan, started_at_us: u64) -> Report {
        Report {
            url: plan.url.clone(),
            destination: plan.destination.clone(),
            producers: plan.producers,
            consumers: plan.consumers,
            size_bytes: plan.size,
            persistent: plan.persistent,
            receipt_every: plan.receipt_every,
            ack: plan.ack.as_str(),
            prefetch: plan.prefetch,
            selectors: plan.selectors,
            warmup_s: plan.warmup.as_secs_f64(),
            started_at_us,
            sent: 0,
            received: 0,
            expected: 0,
            missing: 0,
            extra: 0,
            duplicates: 0,
            redelivered: 0,
            send_duration_s: 0.0,
            receive_duration_s: 0.0,
            send_rate: 0.0,
            receive_rate: 0.0,
            receipt_latency_us: None,
            e2e_latency_us: None,
            errors: Vec::new(),
            receipts: Latency::new(),
            e2e: Latency::new(),
            sent_until: None,
            received_until: None,
        }
    }

    pub(super) fn add_producer(&mut self, r: ProducerResult) {
        self.receipts.merge(&r.receipts);
        self.sent_until = self.sent_until.max(Some(r.finished));
        if let Some(e) = r.error {
            self.errors.push(format!("producer: {e}"));
        }
    }

    pub(super) fn add_consumer(&mut self, r: ConsumerResult) {
        self.e2e.merge(&r.e2e);
        self.received_until = self.received_until.max(r.last);
        if let Some(e) = r.error {
            self.errors.push(format!("consumer: {e}"));
        }
    }

    pub(super) fn finish(&mut self, counters: &RunCounters) {
        self.sent = counters.sent.load(Ordering::Relaxed);
        self.received = counters.received.load(Ordering::Relaxed);
        self.expected = counters.expected.borrow().unwrap_or(0);
        self.missing = self.expected.saturating_sub(self.received);
        self.extra = self.received.saturating_sub(self.expected);
        self.duplicates = counters.duplicates.load(Ordering::Relaxed);
        self.redelivered = counters.redelivered.load(Ordering::Relaxed);
        let since = |t: Option<Instant>| {
            t.map(|t| {
                t.saturating_duration_since(counters.measure_from)
                    .as_secs_f64()
            })
            .unwrap_or(0.0)
        };
        self.send_duration_s = since(self.sent_until);
        self.receive_duration_s = since(self.received_until);
        self.send_rate = rate(self.sent, self.send_duration_s);
        self.receive_rate = rate(self.received, self.receive_duration_s);
        self.receipt_latency_us = self.receipts.summary();
        self.e2e_latency_us = self.e2e.summary();
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.producers == 0 {
            writeln!(
                f,
                "{} consumer(s) draining {} from {}",
                self.consumers, self.destination, self.url
            )?;
        } else {
            writeln!(
                f,
                "{} producer(s), {} consumer(s), {}-byte {} messages to {} on {}",
                self.producers,
                self.consumers,
                self.size_bytes,
                if self.persistent {
                    "persistent"
                } else {
                    "non-persistent"
                },
                self.destination,
                self.url
            )?;
        }
        let receipts = match self.receipt_every {
            0 => "none".to_owned(),
            1 => "every message (synchronous sends)".to_owned(),
            n => format!("every {n} messages"),
        };
        writeln!(
            f,
            "  receipts {receipts}; ack {}; prefetch {}; warm-up {} s",
            self.ack,
            self.prefetch
                .map(|p| p.to_string())
                .unwrap_or_else(|| "broker default".into()),
            self.warmup_s
        )?;
        if let Some(n) = self.selectors {
            writeln!(
                f,
                "  selectors: consumer k takes shard = 'k' of {n} (each message is for one consumer)"
            )?;
        }
        if self.producers > 0 {
            writeln!(
                f,
                "  sent        {:>10} msgs in {:>7.2} s = {:>10.0} msg/s",
                self.sent, self.send_duration_s, self.send_rate
            )?;
        }
        if self.consumers > 0 {
            writeln!(
                f,
                "  received    {:>10} msgs in {:>7.2} s = {:>10.0} msg/s",
                self.received, self.receive_duration_s, self.receive_rate
            )?;
        }
        if self.consumers > 0 {
            writeln!(
                f,
                "  duplicates  {:>10} msgs (already received; not counted above); {} redelivered",
                self.duplicates, self.redelivered
            )?;
        }
        if let Some(p) = &self.receipt_latency_us {
            writeln!(f, "  receipt     {p}")?;
        }
        if let Some(p) = &self.e2e_latency_us {
            writeln!(f, "  end-to-end  {p}")?;
        }
        if self.consumers > 0 && self.producers > 0 && self.missing == 0 {
            writeln!(
                f,
                "  nothing missing: all {} expected deliveries arrived",
                self.expected
            )?;
        }
        if self.missing > 0 || self.extra > 0 {
            writeln!(
                f,
                "  expected {} deliveries: {} missing, {} extra",
                self.expected, self.missing, self.extra
            )?;
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

/// A progress bar on standard error for runs longer than a few seconds
/// (only when standard error is a terminal).
pub(super) struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: Arc<std::sync::OnceLock<ProgressBar>>,
}

/// Runs shorter than this get no progress bar.
const SHOW_AFTER: Duration = Duration::from_secs(2);

impl Progress {
    pub(super) fn start(plan: &Plan, counters: Arc<RunCounters>) -> Progress {
        let plan = plan.clone();
        let shown = Arc::new(std::sync::OnceLock::new());
        let slot = shown.clone();
        let task = tokio::spawn(async move {
            if !std::io::stderr().is_terminal() {
                return;
            }
            tokio::time::sleep(SHOW_AFTER).await;
            let started = Instant::now() - SHOW_AFTER;
            let (len, by_time) = match (plan.end, plan.producers) {
                (End::Duration(d), _) => ((plan.warmup + d).as_millis() as u64, true),
                (End::Count(n), 0) => (n, false),
                (End::Count(n), _) => (n, false),
            };
            let bar = slot.get_or_init(|| ProgressBar::new(len));
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            let mut last = (0u64, 0u64, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let sent = counters.sent.load(Ordering::Relaxed);
                let received = counters.received.load(Ordering::Relaxed);
                let now = Instant::now();
                let dt = now.duration_since(last.2).as_secs_f64();
                bar.set_message(format!(
                    "sent {sent} ({:.0}/s)  received {received} ({:.0}/s)",
                    rate(sent - last.0, dt),
                    rate(received - last.1, dt)
                ));
                last = (sent, received, now);
                bar.set_position(if by_time {
                    started.elapsed().as_millis() as u64
                } else if plan.producers == 0 {
                    received
                } else {
                    sent
                });
            }
        });
        Progress { task, bar: shown }
    }

    pub(super) fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
