//! ActiveMQ headers that change what the broker does and that Halyard does
//! not implement yet: refused with an ERROR naming the header, never
//! silently ignored (docs/STOMP.md lists them all, with the ones Halyard
//! implements).

use halyard_stomp::Headers;

use super::error::Fatal;

/// The `activemq.` SUBSCRIBE headers Halyard reads. ActiveMQ copies every
/// `activemq.X` header onto its consumer's property X, so any other one
/// would change something there: those are refused.
pub(super) const SUBSCRIBE_ACTIVEMQ: [&str; 9] = [
    "activemq.prefetchSize",
    "activemq.selector",
    "activemq.subscriptionName",
    "activemq.exclusive",
    "activemq.priority",
    "activemq.noLocal",
    "activemq.retroactive",
    "activemq.maximumPendingMessageLimit",
    "activemq.dispatchAsync",
];

/// ActiveMQ's message transformations: only the identity one (a body is
/// bytes) is what Halyard does.
const IDENTITY_TRANSFORMATION: &str = "jms-byte";

fn refuse(frame: &str, header: &str, value: &str, why: &str) -> Fatal {
    Fatal::protocol(format!(
        "{frame} header '{header}: {}' is not supported: {why}",
        value.chars().take(80).collect::<String>()
    ))
}

/// Refuses SEND headers Halyard does not implement.
pub(super) fn check_send(h: &Headers) -> Result<(), Fatal> {
    // ActiveMQ's scheduler headers (`AMQ_SCHEDULED_*`) are properties the
    // service's scheduler reads.
    transformation("SEND", h)
}

/// Refuses SUBSCRIBE headers Halyard does not implement.
pub(super) fn check_subscribe(h: &Headers) -> Result<(), Fatal> {
    for (name, value) in h.iter() {
        if name.starts_with("activemq.") && !SUBSCRIBE_ACTIVEMQ.contains(&name) {
            return Err(refuse(
                "SUBSCRIBE",
                name,
                value,
                "Halyard does not implement this ActiveMQ consumer option",
            ));
        }
    }
    if let Some(v) = h.get("activemq.retroactive")
        && v.eq_ignore_ascii_case("true")
    {
        return Err(refuse(
            "SUBSCRIBE",
            "activemq.retroactive",
            v,
            "retroactive consumers are not implemented (topics keep no past messages)",
        ));
    }
    transformation("SUBSCRIBE", h)
}

fn transformation(frame: &str, h: &Headers) -> Result<(), Fatal> {
    match h.get("transformation") {
        Some(v) if v != IDENTITY_TRANSFORMATION => Err(refuse(
            frame,
            "transformation",
            v,
            "message bodies are passed through as bytes (only 'jms-byte' is accepted)",
        )),
        _ => Ok(()),
    }
}
