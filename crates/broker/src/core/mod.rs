//! Destinations, subscriptions, dispatch, acknowledgements, redelivery,
//! dead-lettering and expiry.
//!
//! Every destination is an actor task that owns its messages and consumers;
//! sessions reach it through a [`DestHandle`] (two bounded channels: control
//! and publish). Destinations never wait on sessions: deliveries go out on
//! credit-bounded channels and replies on oneshots.

mod browse;
mod dead_letter;
pub(crate) mod dispatch;
mod groups;
mod handle;
mod paging;
mod queue;
mod reclaim;
mod registrations;
mod registry;
mod topic;
mod virtual_topic;

pub(crate) use dead_letter::{FAILURE_CAUSE, ORIGINAL_DESTINATION, settle};
pub use dispatch::DispatchStats;
pub(crate) use dispatch::{
    ConsumerId, ConsumerReg, Delivery, DeliveryTx, Kick, Note, Select, Seq, SharedCredit, SubKey,
    Taken,
};
pub(crate) use groups::{GROUP_FIRST, GROUP_ID, GROUP_SEQ};
pub(crate) use handle::{
    Control, DestHandle, DurableError, DurableName, Envelope, Gone, Publish, PublishError,
};
pub use handle::{DestinationStats, DurableView};
pub(crate) use queue::spawn_queue;
pub(crate) use registrations::Registrations;
pub(crate) use registry::{BrokerCore, TooManyDestinations, lock};
pub(crate) use topic::spawn_topic;
