//! Acknowledging and rejecting deliveries.

use super::connection::Connection;
use super::error::ServiceError;
use super::subscriptions::AckRef;
use super::{Pending, ready};
use crate::core::Control;
use crate::metrics::Metrics;
use crate::store::Record;

/// An acknowledgement (or, with `reject`, a rejection: the message goes
/// back for redelivery or, past the redelivery limit, to the dead-letter
/// queue) of the delivery `target` names — and, on a cumulative
/// subscription, of every earlier one.
pub(crate) struct AckRequest<'a> {
    pub(crate) target: AckRef<'a>,
    pub(crate) reject: bool,
    /// With `reject`: dead-letter at once instead of redelivering (a JMS
    /// client's poison acknowledgement: it redelivered the message itself
    /// as often as its policy allows).
    pub(crate) poison: bool,
    /// Inside this transaction: takes effect at commit.
    pub(crate) tx: Option<&'a str>,
    /// Whether the client waits for the outcome: then the returned work
    /// completes once the acknowledgement is durable. Otherwise it is
    /// written in order and durable with the store's next sync.
    pub(crate) confirm: bool,
}

impl Connection {
    pub(crate) async fn ack(&mut self, req: AckRequest<'_>) -> Result<Pending, ServiceError> {
        if let Some(t) = req.tx
            && !self.txs.contains_key(t)
        {
            return Err(ServiceError::UnknownTransaction(t.to_owned()));
        }
        let parts = self.subs.take(&req.target)?;

        if let Some(t) = req.tx {
            let tx = self.transaction(t)?;
            let mut holds = Vec::with_capacity(parts.len());
            for acked in parts {
                holds.push((
                    acked.handle.clone(),
                    acked.consumer,
                    acked.seqs(),
                    acked.credit.clone(),
                ));
                if req.reject {
                    tx.nacks.push(acked);
                } else {
                    tx.acks.push(acked);
                }
            }
            for (handle, consumer, seqs, credit) in holds {
                let n = seqs.len();
                let _ = handle.control(Control::Hold { consumer, seqs }).await;
                if let Some(c) = credit {
                    c.release(n).await;
                }
            }
            return Ok(ready());
        }

        if req.reject {
            for acked in parts {
                let (consumer, seqs) = (acked.consumer, acked.seqs());
                let n = seqs.len();
                let poison = req.poison;
                let _ = acked
                    .handle
                    .control(Control::Nack {
                        consumer,
                        seqs,
                        poison,
                    })
                    .await;
                if let Some(c) = &acked.credit {
                    c.release(n).await;
                }
            }
            return Ok(ready());
        }

        let core = self.service.core.clone();
        let mut removes: Vec<Record> = Vec::new();
        for acked in parts {
            let (consumer, seqs) = (acked.consumer, acked.seqs());
            let n = seqs.len();
            Metrics::add(&core.metrics.messages_acked_total, n as u64);
            let _ = acked.handle.control(Control::Ack { consumer, seqs }).await;
            if let Some(c) = &acked.credit {
                c.release(n).await;
            }
            removes.extend(
                acked
                    .items
                    .iter()
                    .filter(|u| u.stored)
                    .map(|u| Record::Remove { seq: u.seq }),
            );
        }
        if removes.is_empty() {
            return Ok(ready());
        }
        if !req.confirm {
            core.store
                .record(removes)
                .await
                .map_err(ServiceError::AckNotStored)?;
            return Ok(ready());
        }
        // Outside a transaction each Remove takes effect on its own: one
        // of a message not yet written cancels its write.
        let stored = core
            .store
            .submit_acks(removes)
            .await
            .map_err(ServiceError::AckNotStored)?;
        Ok(Some(Box::pin(async move {
            stored.await.map(|_| ()).map_err(ServiceError::AckNotStored)
        })))
    }
}
