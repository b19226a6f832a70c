//! ACK and NACK.

use halyard_stomp::{Frame, Version};

use super::error::{Fatal, missing};
use super::session::Session;
use super::subscriptions::AckRef;
use crate::core::Control;
use crate::metrics::Metrics;
use crate::store::Record;

impl Session {
    pub(super) async fn ack(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
        nack: bool,
    ) -> Result<(), Fatal> {
        let command = if nack { "NACK" } else { "ACK" };
        let h = &frame.headers;
        // 1.2 names the message by our `ack` header (sent as `id`); earlier
        // versions by message-id (and, in 1.1, subscription). Accept the
        // older form from 1.2 clients too.
        let r = match (self.version, h.get("id"), h.get("message-id")) {
            (Version::V1_2, Some(id), _) => AckRef::Tag(id),
            (_, _, Some(mid)) => AckRef::MessageId {
                id: mid,
                subscription: h.get("subscription"),
            },
            (Version::V1_2, None, None) => return Err(missing(command, "id")),
            (_, _, None) => return Err(missing(command, "message-id")),
        };
        let tx_id = h.get("transaction");
        if let Some(t) = tx_id
            && !self.txs.contains_key(t)
        {
            return Err(Fatal::protocol(format!("unknown transaction '{t}'")));
        }
        let acked = self
            .subs
            .take(&r)
            .map_err(|e| Fatal::protocol(format!("{command} failed: {e}")))?;
        let seqs = acked.seqs();
        let consumer = acked.consumer;

        if let Some(t) = tx_id {
            let max = self.shared.config.limits.max_transaction_frames;
            let handle = acked.handle.clone();
            let tx = self
                .txs
                .get_mut(t)
                .ok_or_else(|| Fatal::protocol("transaction vanished"))?;
            if tx.frames >= max {
                return Err(Fatal::protocol(format!(
                    "transaction '{t}' has more than limits.max-transaction-frames ({max}) frames"
                )));
            }
            tx.frames += 1;
            if nack {
                tx.nacks.push(acked);
            } else {
                tx.acks.push(acked);
            }
            let _ = handle.control(Control::Hold { consumer, seqs }).await;
            self.effects.receipt(receipt);
            return Ok(());
        }

        if nack {
            let _ = acked.handle.control(Control::Nack { consumer, seqs }).await;
            self.effects.receipt(receipt);
            return Ok(());
        }

        Metrics::add(&self.shared.metrics.messages_acked_total, seqs.len() as u64);
        let _ = acked.handle.control(Control::Ack { consumer, seqs }).await;
        let removes: Vec<Record> = acked
            .items
            .iter()
            .filter(|u| u.stored)
            .map(|u| Record::Remove { seq: u.seq })
            .collect();
        if removes.is_empty() {
            self.effects.receipt(receipt);
            return Ok(());
        }
        let not_stored = |e| Fatal::broker(format!("acknowledgement not stored: {e}"));
        if receipt.is_none() {
            // Nobody waits: written in order, durable with the next sync.
            return self.shared.store.record(removes).await.map_err(not_stored);
        }
        let completion = self
            .shared
            .store
            .submit(removes)
            .await
            .map_err(not_stored)?;
        self.effects.push(
            0,
            Box::pin(async move {
                completion.await.map_err(not_stored)?;
                Ok(receipt)
            }),
        );
        Ok(())
    }
}
