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
    /// An operation did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The client (or its connection) has been closed.
    #[error("connection closed")]
    Closed,
    /// A message cannot be acknowledged (it came from an auto-ack
    /// subscription, or lacks the headers an ACK needs).
    #[error("cannot acknowledge: {0}")]
    NotAckable(String),
}
