//! One consumer connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use halyard_client::{AckMode, Client, ClientError, Message, SubscribeOptions, Subscription};

use super::stats::Latency;
use super::{
    ID_HEADER, Plan, RunCounters, SENT_HEADER, SHARD_HEADER, WARMUP_HEADER, connect, epoch_us,
};

pub(super) struct Consumer {
    /// Which consumer (topic duplicates are counted per subscriber).
    index: u32,
    client: Client,
    sub: Subscription,
}

pub(super) struct ConsumerResult {
    pub(super) e2e: Latency,
    /// When its last measured message arrived.
    pub(super) last: Option<Instant>,
    pub(super) error: Option<String>,
}

impl Consumer {
    pub(super) async fn connect(plan: &Plan, i: u32) -> anyhow::Result<Consumer> {
        let client = connect(&plan.url, &format!("consumer {i}")).await?;
        let mut options = SubscribeOptions::default().ack(plan.ack);
        if let Some(p) = plan.prefetch {
            options = options.prefetch(p);
        }
        if plan.selectors.is_some() {
            options
                .headers
                .push(("selector".to_owned(), format!("{SHARD_HEADER} = '{i}'")));
        }
        let sub = client.subscribe(&plan.destination, options).await?;
        Ok(Consumer {
            index: i,
            client,
            sub,
        })
    }

    /// Receives until every expected message has arrived (across all
    /// consumers), or nothing arrives for the drain timeout once the
    /// expected total is known.
    pub(super) async fn run(mut self, plan: Plan, counters: Arc<RunCounters>) -> ConsumerResult {
        let mut e2e = Latency::new();
        let mut last = None;
        let mut error = None;
        // In client mode one ACK covers every earlier message.
        let batch = match plan.ack {
            AckMode::Client => (plan.prefetch.unwrap_or(1000) / 2).max(1),
            _ => 1,
        };
        let mut unacked: Option<Message> = None;
        let mut unacked_count = 0u32;
        let mut done = counters.all_received.subscribe();
        let mut expected = counters.expected.subscribe();
        loop {
            if *done.borrow_and_update() {
                break;
            }
            let known = expected.borrow_and_update().is_some();
            let m = tokio::select! {
                m = self.sub.next() => m,
                _ = done.changed() => continue,
                _ = expected.changed() => continue,
                _ = tokio::time::sleep(plan.drain_timeout), if known => break,
            };
            let Some(m) = m else {
                error = Some(format!(
                    "connection lost: {}",
                    self.client
                        .close_reason()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "closed".into())
                ));
                break;
            };
            let ack = match plan.ack {
                AckMode::Auto => Ok(()),
                AckMode::ClientIndividual => self.client.ack_unreceipted(&m).await,
                AckMode::Client => {
                    unacked_count += 1;
                    if unacked_count >= batch {
                        unacked_count = 0;
                        unacked = None;
                        self.client.ack_unreceipted(&m).await
                    } else {
                        unacked = Some(m.clone());
                        Ok(())
                    }
                }
            };
            match ack {
                Ok(()) => {}
                // Delivered before a failover: it comes again, and counts then.
                Err(ClientError::AckNotConfirmed) => continue,
                Err(e) => {
                    error = Some(format!("ack failed: {e}"));
                    break;
                }
            }
            if m.header(WARMUP_HEADER).is_some() {
                continue;
            }
            if m.redelivered() {
                counters.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            let subscriber = if plan.topic { self.index } else { 0 };
            if let Some(key) = m.header(ID_HEADER).and_then(|v| own_id(v, plan.run_id))
                && !counters
                    .seen
                    .lock()
                    .map(|mut seen| seen.insert(subscriber, key.0, key.1))
                    .unwrap_or(true)
            {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(sent) = m.header(SENT_HEADER).and_then(|v| v.parse::<u64>().ok()) {
                e2e.record(epoch_us().saturating_sub(sent));
            }
            last = Some(Instant::now());
            counters.received.fetch_add(1, Ordering::Relaxed);
            counters.check_done();
        }
        if let Some(m) = unacked
            && error.is_none()
            && let Err(e) = self.client.ack_unreceipted(&m).await
        {
            error = Some(format!("ack failed: {e}"));
        }
        if error.is_none()
            && let Err(e) = self.client.disconnect().await
        {
            error = Some(format!("disconnect failed: {e}"));
        }
        ConsumerResult { e2e, last, error }
    }
}

/// (producer, sequence) from a `bench-id` of this run; `None` for a
/// message of another run (or not from bench), which is counted but not
/// checked for duplicates.
fn own_id(v: &str, run_id: u64) -> Option<(u32, u64)> {
    let mut parts = v.splitn(3, '-');
    let run = parts.next()?.parse::<u64>().ok()?;
    let producer = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    (run == run_id).then_some((producer, seq))
}
