//! Local transactions (`TransactionInfo` with a `LocalTransactionId`).
//!
//! Sends in a transaction go to the service's transaction at once. The
//! acknowledgements are held here until the commit: a JMS client that
//! rolls back redelivers the messages itself (and acknowledges them again
//! in its next transaction), so a rollback must leave them with their
//! consumer, not send them back to the queue. A transaction whose
//! acknowledgements cannot be made (its consumer closed, or the client
//! acknowledges what another broker sent it before a failover) can only
//! roll back: its commit is answered with `TransactionRolledBackException`,
//! which is what ActiveMQ's clients expect of a transaction a failover
//! interrupted. XA is refused with a clear exception.

use halyard_openwire as ow;

use super::error::{NOT_SUPPORTED, ROLLED_BACK};
use super::session::{Fatal, Reply, Session};
use super::state::{Key, Tx};
use crate::service::{AckRef, AckRequest, DeliveryToken, ServiceError};

/// `TransactionInfo.transaction_type` values.
mod op {
    pub(super) const BEGIN: u8 = 0;
    pub(super) const COMMIT_ONE_PHASE: u8 = 2;
    pub(super) const ROLLBACK: u8 = 4;
}

/// The service's name for a local transaction: the client's connection id
/// and its number, unique as the client makes them.
pub(super) fn tx_name(t: &ow::LocalTransactionId) -> String {
    let connection = t
        .connection_id
        .as_ref()
        .and_then(|c| c.value.as_deref())
        .unwrap_or_default();
    format!("{connection}:{}", t.value)
}

impl Session {
    /// `TransactionInfo`.
    pub(super) async fn transaction(&mut self, t: ow::TransactionInfo) -> Result<(), Fatal> {
        let (id, required) = (t.command_id, t.response_required);
        let name = match &t.transaction_id {
            Some(ow::TransactionId::Local(l)) => tx_name(l),
            Some(ow::TransactionId::Xa(_)) => {
                return self.refuse(
                    id,
                    required,
                    NOT_SUPPORTED,
                    "XA transactions are not supported by Halyard yet".into(),
                );
            }
            None => {
                return self.refuse(
                    id,
                    required,
                    super::error::JMS_EXCEPTION,
                    "TransactionInfo without a transaction id".into(),
                );
            }
        };
        match t.transaction_type {
            op::BEGIN => match self.conn()?.begin(&name) {
                Ok(()) => {
                    self.txs.open.insert(name, Tx::default());
                    self.reply(Reply::to(id, required))
                }
                Err(e) => self.refuse_service(id, required, &e),
            },
            op::COMMIT_ONE_PHASE => {
                let consumers = self.txs.consumers_of(&name);
                let r = self.commit(name, id, required).await;
                self.unextend(consumers).await;
                r
            }
            op::ROLLBACK => {
                let consumers = self.txs.consumers_of(&name);
                let tx = self.txs.open.remove(&name).unwrap_or_default();
                self.give_back(tx);
                let r = match self.conn()?.abort(&name).await {
                    // Never begun here (a failover came between): nothing
                    // to undo.
                    Ok(_) | Err(ServiceError::UnknownTransaction(_)) => {
                        self.reply(Reply::to(id, required))
                    }
                    Err(e) => self.refuse_service(id, required, &e),
                };
                self.unextend(consumers).await;
                r
            }
            other => self.refuse(
                id,
                required,
                NOT_SUPPORTED,
                format!(
                    "transaction operation {other} is for XA transactions, which Halyard does not support yet"
                ),
            ),
        }
    }

    /// Commits: the held acknowledgements join the service's transaction,
    /// which then commits in one store batch.
    async fn commit(&mut self, name: String, id: i32, required: bool) -> Result<(), Fatal> {
        let tx = self.txs.open.remove(&name).unwrap_or_default();
        let rolled_back = |why: String| format!("transaction rolled back: {why}");
        if tx.rollback_only {
            self.give_back(tx);
            let _ = self.conn()?.abort(&name).await;
            return self.refuse(
                id,
                required,
                ROLLED_BACK,
                rolled_back(
                    "it acknowledged messages this broker did not deliver (a failover came between) or whose consumer closed".into(),
                ),
            );
        }
        let tokens: Vec<DeliveryToken> = tx
            .held
            .iter()
            .flat_map(|(_, seqs)| seqs.iter().map(|(_, t)| *t))
            .collect();
        let conn = self.conn()?;
        for t in tokens {
            let request = AckRequest {
                target: AckRef::Delivery(t),
                reject: false,
                poison: false,
                tx: Some(&name),
                confirm: false,
            };
            if let Err(e) = conn.ack(request).await {
                let _ = conn.abort(&name).await;
                return self.refuse(id, required, ROLLED_BACK, rolled_back(e.to_string()));
            }
        }
        match self.conn()?.commit(&name, false).await {
            Ok((work, bytes)) => {
                let reply = Reply {
                    correlation: required.then_some(id),
                    failure_class: Some(ROLLED_BACK),
                    ..Reply::default()
                };
                self.after(bytes, reply, work)
            }
            Err(e) => self.refuse(id, required, ROLLED_BACK, rolled_back(e.to_string())),
        }
    }

    /// The transaction that held these consumers' messages ended: their
    /// prefetch extension shrinks back.
    async fn unextend(&mut self, consumers: Vec<Key>) {
        for k in consumers {
            self.extend_prefetch(k).await;
        }
    }

    /// A rolled-back transaction's acknowledgements are undone: the
    /// deliveries are its consumers' again.
    fn give_back(&mut self, tx: Tx) {
        for (consumer, seqs) in tx.held.into_iter().rev() {
            self.consumers.restore(&consumer, seqs);
        }
    }
}
