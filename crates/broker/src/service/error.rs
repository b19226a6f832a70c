//! What the broker service answers when it refuses or fails a request.
//!
//! Errors are typed so each protocol head can render them in its own terms
//! (a STOMP ERROR frame, an OpenWire `ExceptionResponse`) and tell a
//! client's mistake from the broker's failure.

use crate::core::{DurableError, PublishError, TooManyDestinations};
use crate::model::{Destination, PatternError};
use crate::store::StoreError;

/// How an acknowledgement named the delivery it could not find.
#[derive(Debug, Clone)]
pub(crate) enum AckTarget {
    /// By the token the delivery was tracked under.
    Token(String),
    /// By message id.
    MessageId(String),
}

/// A request the broker service refused or could not carry out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ServiceError {
    // ---- the client's mistakes ----
    /// The client could not log in.
    #[error(transparent)]
    Login(#[from] super::auth::LoginError),
    /// The principal lacks a right on a destination: refused, and the
    /// connection goes on.
    #[error(transparent)]
    Denied(#[from] super::auth::Denied),
    #[error("too many connections for user '{user}' (limits.max-connections-per-user is {max})")]
    TooManyUserConnections { user: String, max: usize },
    #[error("client-id must not be empty")]
    EmptyClientId,
    #[error("client-id '{0}' is already connected")]
    ClientIdInUse(String),
    #[error("unknown transaction '{0}'")]
    UnknownTransaction(String),
    #[error("transaction '{0}' is already open")]
    TransactionOpen(String),
    #[error(
        "too many open transactions on this connection (limits.max-transactions-per-connection is {0})"
    )]
    TooManyTransactions(usize),
    #[error("transaction '{id}' has more than limits.max-transaction-frames ({max}) frames")]
    TransactionTooLong { id: String, max: usize },
    #[error(
        "transaction '{id}' would hold more than limits.max-transaction-bytes ({max}) bytes of messages"
    )]
    TransactionTooLarge { id: String, max: usize },
    #[error("subscription id '{0}' is already in use on this connection")]
    SubscriptionIdInUse(String),
    #[error(
        "too many subscriptions on this connection (limits.max-subscriptions-per-connection is {0})"
    )]
    TooManySubscriptions(usize),
    #[error("no subscription with id '{0}' on this connection")]
    NoSuchSubscription(String),
    /// The selector does not parse; the error gives the position.
    #[error("{0}")]
    InvalidSelector(#[from] halyard_selector::ParseError),
    #[error("durable subscription name must not be empty")]
    EmptyDurableName,
    /// Durable subscriptions are named by client id; the connection has none.
    #[error("durable subscriptions need a client id")]
    DurableNeedsClientId,
    #[error("durable subscriptions are for topics, not {0}")]
    DurableNotOnTopic(Destination),
    #[error("no durable subscription '{name}' for client-id '{client_id}'")]
    NoSuchDurable { client_id: String, name: String },
    /// The topic refused to create or remove the durable subscription.
    #[error(transparent)]
    Durable(#[from] DurableError),
    #[error("cannot subscribe to {0}: it is another connection's temporary destination")]
    OthersTemporary(Destination),
    #[error("a subscription needs a destination")]
    NoDestination,
    #[error(transparent)]
    InvalidPattern(#[from] PatternError),
    #[error("temporary destinations have no wildcards: {0}")]
    WildcardTemporary(Destination),
    #[error(
        "cannot send to {0}: a name with a wildcard element ('*' or '>') stands for many destinations; send to one, or to a comma-separated list"
    )]
    WildcardSend(Destination),
    #[error("a durable subscription is to one topic, not to a list of destinations")]
    DurableComposite,
    #[error("a queue browser browses one queue, not a list or a wildcard")]
    BrowseOne,
    #[error("only queues can be browsed, not {0}")]
    BrowseNotQueue(Destination),
    #[error(
        "subscription '{0}' is a queue browser: browsing does not consume, so its messages cannot be acknowledged or rejected"
    )]
    BrowserAck(String),
    #[error(
        "no unacknowledged message with {} on this connection (never delivered, or already acknowledged)",
        match .0 { AckTarget::Token(t) => format!("ack id '{t}'"), AckTarget::MessageId(m) => format!("message-id '{m}'") }
    )]
    NotUnacknowledged(AckTarget),
    #[error(transparent)]
    TooManyDestinations(#[from] TooManyDestinations),

    // ---- the broker's failures ----
    #[error("message not stored: {0}")]
    NotStored(#[source] StoreError),
    #[error("acknowledgement not stored: {0}")]
    AckNotStored(#[source] StoreError),
    #[error("transaction not committed: {0}")]
    NotCommitted(#[source] StoreError),
    #[error("message not accepted: {0}")]
    NotAccepted(#[source] PublishError),
    #[error(
        "{what} held back by producer flow control for longer than limits.flow-control-timeout-ms ({ms} ms): the broker is at its memory limit or the destination is full"
    )]
    FlowControlTimeout { what: &'static str, ms: u64 },
    #[error("destination stopped")]
    DestinationStopped,
    #[error("invalid schedule: {0}")]
    BadSchedule(#[from] super::scheduler::spec::SpecError),
    #[error("the scheduler holds scheduler.max-messages ({0}) messages already")]
    TooManyScheduled(usize),
    #[error("the scheduler has stopped")]
    SchedulerStopped,
}

impl ServiceError {
    /// Whether the client caused it (and so it counts as a protocol error)
    /// rather than the broker failing.
    pub(crate) fn is_client_fault(&self) -> bool {
        !matches!(
            self,
            ServiceError::NotStored(_)
                | ServiceError::AckNotStored(_)
                | ServiceError::NotCommitted(_)
                | ServiceError::NotAccepted(_)
                | ServiceError::FlowControlTimeout { .. }
                | ServiceError::DestinationStopped
                | ServiceError::SchedulerStopped
                | ServiceError::Durable(DurableError::NotCreated(_) | DurableError::NotRemoved(_))
        )
    }
}
