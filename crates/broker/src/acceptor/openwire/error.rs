//! How a refusal reaches a JMS client: an `ExceptionResponse` carrying the
//! Java exception class the ActiveMQ client re-creates by name and throws
//! from the call that caused it (`send`, `createConsumer`, `commit`, …).
//! The class must exist on the client's class path, so only JMS's own
//! exceptions (and `java.lang` ones) are named.

use crate::service::ServiceError;
use crate::service::auth::LoginError;

/// JMS's base exception: what a refusal with no more specific class gets.
pub(super) const JMS_EXCEPTION: &str = "javax.jms.JMSException";
/// A transaction that cannot commit (unknown after a failover, or failed):
/// the client's application rolls back and retries, as with ActiveMQ.
pub(super) const ROLLED_BACK: &str = "javax.jms.TransactionRolledBackException";
/// A request the connection's state does not allow.
pub(super) const ILLEGAL_STATE: &str = "javax.jms.IllegalStateException";
/// What XA requests get until Halyard supports them.
pub(super) const NOT_SUPPORTED: &str = "java.lang.UnsupportedOperationException";
/// A destination name the broker cannot use.
pub(super) const INVALID_DESTINATION: &str = "javax.jms.InvalidDestinationException";

/// The Java exception class for a service refusal.
pub(super) fn exception_class(e: &ServiceError) -> &'static str {
    use ServiceError as E;
    match e {
        E::Login(LoginError::BadCredentials | LoginError::Required) | E::Denied(_) => {
            "javax.jms.JMSSecurityException"
        }
        E::EmptyClientId | E::ClientIdInUse(_) => "javax.jms.InvalidClientIDException",
        E::InvalidSelector(_) => "javax.jms.InvalidSelectorException",
        E::UnknownTransaction(_) | E::NotCommitted(_) => ROLLED_BACK,
        E::TransactionOpen(_) | E::BrowserAck(_) | E::NotUnacknowledged(_) => ILLEGAL_STATE,
        E::OthersTemporary(_)
        | E::NoDestination
        | E::InvalidPattern(_)
        | E::WildcardTemporary(_)
        | E::WildcardSend(_)
        | E::DurableNotOnTopic(_)
        | E::BrowseNotQueue(_)
        | E::BrowseOne
        | E::DurableComposite => INVALID_DESTINATION,
        E::TooManyUserConnections { .. }
        | E::TooManyTransactions(_)
        | E::TransactionTooLong { .. }
        | E::TransactionTooLarge { .. }
        | E::TooManySubscriptions(_)
        | E::TooManyDestinations(_)
        | E::FlowControlTimeout { .. }
        | E::TooManyScheduled(_)
        | E::NotStored(_)
        | E::NotAccepted(_) => "javax.jms.ResourceAllocationException",
        _ => JMS_EXCEPTION,
    }
}
