use std::time::Duration;

use crate::url::UrlError;

/// What went wrong talking to the broker. Cloneable, so one connection
/// failure can be reported to every caller waiting on that connection.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The TCP connection could not be made.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed: the broker's certificate is not trusted or
    /// not for this host, or the broker refused ours. A failover client
    /// tries the next broker, as after any failed connection.
    #[error("cannot connect to {address}: TLS: {reason}")]
    Tls {
        /// `host:port`.
        address: String,
        /// What went wrong, and what to change.
        reason: String,
    },
    /// No broker of a failover list could be reached in the attempts
    /// allowed (`maxReconnectAttempts` / `startupMaxReconnectAttempts`).
    #[error("gave up reconnecting after {attempts} attempt(s): {last}")]
    Unreachable {
        /// Passes over the broker list.
        attempts: u64,
        /// The last failure.
        last: String,
    },
    /// The broker answered with an ERROR frame.
    #[error("broker error: {message}{}", if .detail.is_empty() || .detail == .message { String::new() } else { format!(" ({})", .detail) })]
    Broker {
        /// The `message` header.
        message: String,
        /// The body.
        detail: String,
    },
    /// The broker sent something that is not valid STOMP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading from or writing to the connection failed.
    #[error("connection lost: {0}")]
    Io(String),
    /// An operation did not complete in time (for a failover client: it
    /// waited longer than `timeout` for a connection).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The client (or its connection) has been closed.
    #[error("connection closed")]
    Closed,
    /// A message cannot be acknowledged (it came from an auto-ack
    /// subscription, or lacks the headers an ACK needs).
    #[error("cannot acknowledge: {0}")]
    NotAckable(String),
    /// The connection failed over while a transaction was open: the broker
    /// rolled it back. Nothing of it took effect; start again.
    #[error("transaction '{0}' was rolled back: the connection failed over while it was open")]
    TransactionRolledBack(String),
    /// The connection failed over while a COMMIT was on its way: it may or
    /// may not have taken effect.
    #[error(
        "the outcome of committing transaction '{0}' is unknown: the connection failed before the broker confirmed it"
    )]
    CommitOutcomeUnknown(String),
    /// The connection failed over before the broker confirmed an
    /// acknowledgement: the message may be delivered again (flagged
    /// redelivered).
    #[error(
        "acknowledgement not confirmed before the connection failed over; the message may be redelivered"
    )]
    AckNotConfirmed,
}
