//! A local transaction's state: sends, acknowledgements and rejections
//! buffered between begin and commit (see `commit.rs`).

use super::copy::Copies;
use super::subscriptions::Acked;

#[derive(Default)]
pub(crate) struct Transaction {
    /// Copies of the messages sent, to store and publish at commit.
    pub(super) sends: Copies,
    /// Deliveries acknowledged in the transaction (held by their
    /// destinations until it ends).
    pub(super) acks: Vec<Acked>,
    /// Deliveries rejected in the transaction (also held).
    pub(super) nacks: Vec<Acked>,
    /// Requests (sends, acknowledgements) made in it.
    pub(super) requests: usize,
    /// Scheduled messages sent in it: stored and handed to the scheduler
    /// at commit (their first firing counts from then, as ActiveMQ's).
    pub(super) scheduled: Vec<(
        std::sync::Arc<crate::model::Message>,
        super::scheduler::spec::Spec,
    )>,
    /// Body bytes of its sends.
    pub(super) bytes: usize,
}

impl Transaction {
    /// Ends the transaction without effect: its sends are dropped and the
    /// messages it acknowledged or rejected go back for redelivery.
    pub(super) async fn roll_back(self) {
        for held in self.acks.into_iter().chain(self.nacks) {
            held.release(false).await;
        }
    }
}
