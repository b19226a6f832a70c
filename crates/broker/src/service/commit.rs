//! Begin, commit and abort: a transaction's sends and acknowledgements are
//! made durable in one atomic store batch, then applied.

use super::connection::Connection;
use super::copy::{Copy, deliver};
use super::error::ServiceError;
use super::scheduler::Entry;
use super::send::scheduled_records;
use super::transaction::Transaction;
use super::{Pending, ready};
use crate::metrics::Metrics;
use crate::store::{Duplicates, Record};

impl Connection {
    /// Counts one more request against the transaction `id`'s limit.
    pub(super) fn transaction(&mut self, id: &str) -> Result<&mut Transaction, ServiceError> {
        let max = self.service.core.config.limits.max_transaction_frames;
        let tx = self
            .txs
            .get_mut(id)
            .ok_or_else(|| ServiceError::UnknownTransaction(id.to_owned()))?;
        if tx.requests >= max {
            return Err(ServiceError::TransactionTooLong {
                id: id.to_owned(),
                max,
            });
        }
        tx.requests += 1;
        Ok(tx)
    }

    /// Counts a SEND of `bytes` against the transaction `id`'s limits.
    pub(super) fn transaction_send(
        &mut self,
        id: &str,
        bytes: usize,
    ) -> Result<&mut Transaction, ServiceError> {
        let max_bytes = self.service.core.config.limits.max_transaction_bytes;
        let tx = self.transaction(id)?;
        if tx.bytes + bytes > max_bytes {
            return Err(ServiceError::TransactionTooLarge {
                id: id.to_owned(),
                max: max_bytes,
            });
        }
        tx.bytes += bytes;
        Ok(tx)
    }

    /// Starts transaction `id`.
    pub(crate) fn begin(&mut self, id: &str) -> Result<(), ServiceError> {
        if self.txs.contains_key(id) {
            return Err(ServiceError::TransactionOpen(id.to_owned()));
        }
        let max = self
            .service
            .core
            .config
            .limits
            .max_transactions_per_connection;
        if self.txs.len() >= max {
            return Err(ServiceError::TooManyTransactions(max));
        }
        self.txs.insert(id.to_owned(), Transaction::default());
        Ok(())
    }

    /// Commits transaction `id`: its sends and acknowledgements are made
    /// durable in one atomic store batch, then applied. With `confirm`, the
    /// returned work also waits until the last message to each destination
    /// has been taken in (the earlier ones are in before it). The second
    /// value is the body bytes the commit holds in memory until then.
    pub(crate) async fn commit(
        &mut self,
        id: &str,
        confirm: bool,
    ) -> Result<(Pending, usize), ServiceError> {
        let tx = self
            .txs
            .remove(id)
            .ok_or_else(|| ServiceError::UnknownTransaction(id.to_owned()))?;
        let mut batch: Vec<Record> = tx.sends.iter().filter_map(Copy::record).collect();
        let bytes = tx.bytes;
        for held in &tx.acks {
            for u in held.items.iter().filter(|u| u.stored) {
                batch.push(Record::Remove { seq: u.seq });
            }
        }
        // Scheduled messages count their first firing from the commit.
        let zone = self.service.core.config.scheduler.time_zone;
        let now = crate::model::now_ms();
        let mut scheduled = Vec::with_capacity(tx.scheduled.len());
        for (m, spec) in &tx.scheduled {
            let due = spec.first_due(now, zone)?;
            batch.extend(scheduled_records(m, due));
            scheduled.push(Entry::new(m.clone(), due));
        }
        let scheduler = self.service.scheduler.get().cloned();
        if !scheduled.is_empty() && scheduler.is_none() {
            return Err(ServiceError::SchedulerStopped);
        }
        let adds = batch.iter().any(|r| matches!(r, Record::Add { .. }));
        let stored = if batch.is_empty() {
            None
        } else {
            Some(
                self.store_batch(batch, adds, "COMMIT", ServiceError::NotCommitted)
                    .await?,
            )
        };
        let core = self.service.core.clone();
        let work = async move {
            let duplicates = match stored {
                Some(s) => s.await?,
                None => Duplicates::default(),
            };
            // Copies committed before (a transaction run again after a
            // failover left its outcome unknown) are skipped.
            deliver(&core, tx.sends, &duplicates, confirm).await?;
            if let Some(scheduler) = scheduler {
                for e in scheduled {
                    if !duplicates.contains(e.seq) {
                        scheduler.add(e).await?;
                    }
                }
            }
            for held in tx.acks {
                Metrics::add(&core.metrics.messages_acked_total, held.items.len() as u64);
                held.release(true).await;
            }
            for held in tx.nacks {
                held.release(false).await;
            }
            Ok(())
        };
        Ok((Some(Box::pin(work)), bytes))
    }

    /// Discards transaction `id`'s sends and returns its acknowledged
    /// messages for redelivery.
    pub(crate) async fn abort(&mut self, id: &str) -> Result<Pending, ServiceError> {
        let tx = self
            .txs
            .remove(id)
            .ok_or_else(|| ServiceError::UnknownTransaction(id.to_owned()))?;
        tx.roll_back().await;
        Ok(ready())
    }
}
