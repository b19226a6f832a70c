//! Transactions: SENDs, ACKs and NACKs buffered between BEGIN and COMMIT.

use std::sync::Arc;

use super::subscriptions::Acked;
use crate::core::{Control, DestHandle};
use crate::model::Message;

#[derive(Default)]
pub(super) struct Transaction {
    /// Messages to publish at commit; `None` for a temporary queue that was
    /// already gone when the SEND arrived.
    pub(super) sends: Vec<(Option<DestHandle>, Arc<Message>)>,
    /// Deliveries acknowledged in the transaction (held by their
    /// destinations until it ends).
    pub(super) acks: Vec<Acked>,
    /// Deliveries rejected in the transaction (also held).
    pub(super) nacks: Vec<Acked>,
    pub(super) frames: usize,
    /// Body bytes of its sends.
    pub(super) bytes: usize,
}

impl Transaction {
    /// Ends the transaction without effect: its sends are dropped and the
    /// messages it acknowledged or rejected go back for redelivery.
    pub(super) async fn roll_back(self) {
        for held in self.acks.into_iter().chain(self.nacks) {
            let seqs = held.seqs();
            let _ = held
                .handle
                .control(Control::Rollback {
                    consumer: held.consumer,
                    seqs,
                })
                .await;
        }
    }
}

mod commands {
    use halyard_stomp::Frame;

    use super::super::error::{Fatal, missing};
    use super::super::send::{duplicate_id, flow_control, publish};
    use super::super::session::Session;
    use super::Transaction;
    use crate::core::Control;
    use crate::metrics::Metrics;
    use crate::store::{Duplicates, Record, StoreKey};

    fn tx_id<'a>(frame: &'a Frame, command: &str) -> Result<&'a str, Fatal> {
        frame
            .headers
            .get("transaction")
            .ok_or_else(|| missing(command, "transaction"))
    }

    impl Session {
        pub(in super::super) fn begin(
            &mut self,
            frame: Frame,
            receipt: Option<String>,
        ) -> Result<(), Fatal> {
            let id = tx_id(&frame, "BEGIN")?;
            if self.txs.contains_key(id) {
                return Err(Fatal::protocol(format!(
                    "transaction '{id}' is already open"
                )));
            }
            let max = self.shared.config.limits.max_transactions_per_connection;
            if self.txs.len() >= max {
                return Err(Fatal::protocol(format!(
                    "too many open transactions on this connection (limits.max-transactions-per-connection is {max})"
                )));
            }
            self.txs.insert(id.to_owned(), Transaction::default());
            self.effects.receipt(receipt);
            Ok(())
        }

        /// Removes the transaction a COMMIT or ABORT names.
        fn take_transaction(&mut self, frame: &Frame, command: &str) -> Result<Transaction, Fatal> {
            let id = tx_id(frame, command)?;
            self.txs
                .remove(id)
                .ok_or_else(|| Fatal::protocol(format!("unknown transaction '{id}'")))
        }

        /// Makes the transaction's sends and acknowledgements durable in
        /// one atomic store batch, then applies them.
        pub(in super::super) async fn commit(
            &mut self,
            frame: Frame,
            receipt: Option<String>,
        ) -> Result<(), Fatal> {
            let tx = self.take_transaction(&frame, "COMMIT")?;
            let mut batch = Vec::new();
            let mut bytes = 0;
            for (handle, m) in &tx.sends {
                bytes += m.body.len();
                if let Some(h) = handle
                    && m.persistent
                    && h.stores()
                {
                    batch.push(Record::Add {
                        key: StoreKey::Queue(h.destination().name().into()),
                        message: m.clone(),
                        dedup: duplicate_id(m),
                    });
                }
            }
            for held in &tx.acks {
                for u in held.items.iter().filter(|u| u.stored) {
                    batch.push(Record::Remove { seq: u.seq });
                }
            }
            if batch.iter().any(|r| matches!(r, Record::Add { .. })) {
                flow_control(&self.shared, "COMMIT", self.shared.store.admit())
                    .await?
                    .map_err(|e| Fatal::broker(format!("transaction not committed: {e}")))?;
            }
            let completion =
                if batch.is_empty() {
                    None
                } else {
                    Some(
                        self.shared.store.submit(batch).await.map_err(|e| {
                            Fatal::broker(format!("transaction not committed: {e}"))
                        })?,
                    )
                };
            let shared = self.shared.clone();
            self.effects.push(
                bytes,
                Box::pin(async move {
                    let duplicates = match completion {
                        Some(c) => c.await.map_err(|e| {
                            Fatal::broker(format!("transaction not committed: {e}"))
                        })?,
                        None => Duplicates::default(),
                    };
                    // With a receipt, the last message to each destination is
                    // confirmed: the earlier ones are in before it.
                    let mut confirms = vec![false; tx.sends.len()];
                    if receipt.is_some() {
                        let mut seen = std::collections::HashSet::new();
                        for (i, (handle, _)) in tx.sends.iter().enumerate().rev() {
                            if let Some(h) = handle {
                                confirms[i] = seen.insert(h.destination().clone());
                            }
                        }
                    }
                    for ((handle, m), confirm) in tx.sends.into_iter().zip(confirms) {
                        if duplicates.contains(m.seq) {
                            // Committed before (a transaction run again
                            // after a failover left its outcome unknown).
                            Metrics::inc(&shared.metrics.duplicates_total);
                            continue;
                        }
                        match handle {
                            Some(h) => publish(&shared, &h, m, confirm).await?,
                            None => Metrics::inc(&shared.metrics.messages_dropped_total),
                        }
                    }
                    for held in tx.acks {
                        let seqs = held.seqs();
                        Metrics::add(&shared.metrics.messages_acked_total, seqs.len() as u64);
                        let _ = held
                            .handle
                            .control(Control::Commit {
                                consumer: held.consumer,
                                seqs,
                            })
                            .await;
                    }
                    for held in tx.nacks {
                        let seqs = held.seqs();
                        let _ = held
                            .handle
                            .control(Control::Rollback {
                                consumer: held.consumer,
                                seqs,
                            })
                            .await;
                    }
                    Ok(receipt)
                }),
            );
            Ok(())
        }

        /// Discards the transaction's sends and returns its acknowledged
        /// messages for redelivery.
        pub(in super::super) async fn abort(
            &mut self,
            frame: Frame,
            receipt: Option<String>,
        ) -> Result<(), Fatal> {
            let tx = self.take_transaction(&frame, "ABORT")?;
            tx.roll_back().await;
            self.effects.receipt(receipt);
            Ok(())
        }
    }
}
