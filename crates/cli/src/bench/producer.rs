//! One producer connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use halyard_client::{Client, SendMessage};

use super::stats::Latency;
use super::{
    End, ID_HEADER, Plan, RunCounters, SENT_HEADER, SHARD_HEADER, WARMUP_HEADER, epoch_us,
};

pub(super) struct ProducerResult {
    pub(super) receipts: Latency,
    /// When its last message was confirmed (DISCONNECT's receipt).
    pub(super) finished: Instant,
    pub(super) error: Option<String>,
}

/// Sends until the plan's end, waiting for a receipt every
/// `receipt_every` messages; then disconnects, which waits until the
/// broker has processed everything sent.
pub(super) async fn run(
    client: Client,
    index: u32,
    plan: Plan,
    counters: Arc<RunCounters>,
) -> ProducerResult {
    let body = Bytes::from(vec![b'x'; plan.size]);
    let mut receipts = Latency::new();
    let mut i = 0u64;
    let error = loop {
        let now = Instant::now();
        let measured = now >= counters.measure_from;
        if measured {
            let done = match plan.end {
                End::Count(n) => counters.claimed.fetch_add(1, Ordering::Relaxed) >= n,
                End::Duration(d) => now >= counters.measure_from + d,
            };
            if done {
                break None;
            }
        }
        i += 1;
        let want_receipt = plan.receipt_every > 0 && i.is_multiple_of(plan.receipt_every);
        let mut m = SendMessage::new(plan.destination.clone(), body.clone())
            .persistent(plan.persistent)
            .receipt(want_receipt)
            .header(SENT_HEADER, epoch_us().to_string())
            .header(ID_HEADER, format!("{}-{index}-{i}", plan.run_id));
        if !measured {
            m = m.header(WARMUP_HEADER, "1");
        }
        for (name, value) in &plan.headers {
            m = m.header(name.clone(), value.clone());
        }
        if let Some(n) = plan.selectors {
            m = m.header(SHARD_HEADER, (i % u64::from(n)).to_string());
        }
        let receipt = match client.send_nowait(m).await {
            Ok(r) => r,
            Err(e) => break Some(format!("send failed: {e}")),
        };
        if want_receipt {
            if let Err(e) = receipt.await {
                break Some(format!("no receipt: {e}"));
            }
            if measured {
                receipts.record(now.elapsed().as_micros() as u64);
            }
        }
        if measured {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    };
    let error = match error {
        Some(e) => Some(e),
        None => client
            .disconnect()
            .await
            .err()
            .map(|e| format!("disconnect failed: {e}")),
    };
    ProducerResult {
        receipts,
        finished: Instant::now(),
        error,
    }
}
