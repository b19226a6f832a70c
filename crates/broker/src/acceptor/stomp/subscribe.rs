//! SUBSCRIBE and UNSUBSCRIBE in STOMP's terms; the broker service keeps the
//! subscriptions.
//!
//! A durable subscription is named as ActiveMQ names it over STOMP: the
//! connection's `client-id` plus `activemq.subscriptionName` on SUBSCRIBE
//! (`durable-subscription-name`, Artemis' spelling, works too). UNSUBSCRIBE
//! by `id` only detaches the consumer; UNSUBSCRIBE carrying the name also
//! removes the subscription and what was kept for it.

use halyard_stomp::{Frame, Headers, Version};

use super::destination::StompDestination;
use super::error::{Fatal, missing};
use super::refused;
use super::session::Session;
use crate::model::Destination;
use crate::service::{AckMode, ServiceError, SubscribeSpec, Unsubscribe};

/// Prefetch headers, in order of preference: ActiveMQ's spelling first.
const PREFETCH_HEADERS: [&str; 2] = ["activemq.prefetchSize", "prefetch-count"];
/// Durable subscription name headers: ActiveMQ's, then Artemis'.
const DURABLE_HEADERS: [&str; 2] = ["activemq.subscriptionName", "durable-subscription-name"];

fn durable_header(h: &Headers) -> Option<&str> {
    DURABLE_HEADERS.iter().find_map(|n| h.get(n))
}

/// A `true`/`false` header (absent: false).
fn flag(h: &Headers, name: &str) -> Result<bool, Fatal> {
    match h.get(name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Fatal::protocol(format!(
            "invalid {name} header '{v}': expected true or false"
        ))),
    }
}

/// `activemq.priority`: ActiveMQ's consumer priority, a byte (0 by
/// default; higher is served first).
fn consumer_priority(h: &Headers) -> Result<i8, Fatal> {
    let Some(v) = h.get("activemq.priority") else {
        return Ok(0);
    };
    v.trim().parse::<i8>().map_err(|_| {
        Fatal::protocol(format!(
            "invalid activemq.priority '{v}': expected -128 to 127 (higher is served first)"
        ))
    })
}

/// `activemq.maximumPendingMessageLimit`: a topic subscriber's own bound on
/// the messages waiting for it (-1: the broker's).
fn pending_limit(h: &Headers) -> Result<Option<usize>, Fatal> {
    let name = "activemq.maximumPendingMessageLimit";
    let Some(v) = h.get(name) else {
        return Ok(None);
    };
    match v.trim().parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        _ => Err(Fatal::protocol(format!(
            "invalid {name} '{v}': expected a count of at least 1, or -1 for the broker's default"
        ))),
    }
}

/// The service's acknowledgement mode for STOMP's `ack` header.
fn ack_mode(value: Option<&str>) -> Result<AckMode, Fatal> {
    use halyard_stomp::AckMode as Stomp;
    match Stomp::from_header(value) {
        Ok(Stomp::Auto) => Ok(AckMode::Auto),
        Ok(Stomp::Client) => Ok(AckMode::Cumulative),
        Ok(Stomp::ClientIndividual) => Ok(AckMode::Individual),
        Err(e) => Err(Fatal::protocol(e.to_string())),
    }
}

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let h = &frame.headers;
        let scope = self.conn()?.temp_scope();
        let dest_header = h
            .get("destination")
            .ok_or_else(|| missing("SUBSCRIBE", "destination"))?;
        let dests = Destination::parse_list(dest_header, &scope)
            .map_err(|e| Fatal::protocol(e.to_string()))?;
        refused::check_subscribe(h)?;
        // STOMP 1.0 made `id` optional; like ActiveMQ, use the destination.
        let id = match h.get("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => dest_header.to_owned(),
            None => return Err(missing("SUBSCRIBE", "id")),
        };
        let spec = SubscribeSpec {
            id,
            destinations: dests.clone(),
            ack: ack_mode(h.get("ack"))?,
            prefetch: self.prefetch(h)?,
            durable: durable_header(h).map(str::to_owned),
            // ActiveMQ sets `activemq.*` headers on its consumer as they
            // are named, so `activemq.selector` is a selector too; it wins.
            selector: h
                .get("activemq.selector")
                .or_else(|| h.get("selector"))
                .map(str::to_owned),
            browse: flag(h, "browser")?,
            priority: consumer_priority(h)?,
            exclusive: flag(h, "activemq.exclusive")?,
            no_local: flag(h, "activemq.noLocal")?,
            pending_limit: pending_limit(h)?,
        };
        // Deliveries show the destination a message was sent to; this is
        // the spelling for the common case, one destination named as is.
        let shown = (dests[0].clone(), dests[0].display_for(&scope));
        let subscribed = match self.conn()?.subscribe(spec).await {
            Err(e @ ServiceError::Denied(_)) => return self.refuse(e, receipt),
            other => other,
        };
        let (key, work) = subscribed.map_err(|e| match e {
            ServiceError::DurableNotOnTopic(_) => Fatal::protocol(format!(
                "durable subscriptions are for topics, not {dest_header}"
            )),
            ServiceError::OthersTemporary(_) => Fatal::protocol(format!(
                "cannot subscribe to {dest_header}: it is another connection's temporary destination"
            )),
            e => Fatal::from(e),
        })?;
        self.dest_headers.insert(key, shown);
        self.after(0, receipt, work)
    }

    fn prefetch(&self, h: &Headers) -> Result<Option<u32>, Fatal> {
        let max = self.service.core.config.limits.max_prefetch;
        let Some((name, v)) = PREFETCH_HEADERS
            .iter()
            .find_map(|n| h.get(n).map(|v| (*n, v)))
        else {
            return Ok(None);
        };
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=max).contains(p))
            .map(Some)
            .ok_or_else(|| {
                Fatal::protocol(format!(
                    "invalid {name} '{v}': expected 1 to {max} (limits.max-prefetch)"
                ))
            })
    }

    pub(super) async fn unsubscribe(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let h = &frame.headers;
        let durable = durable_header(h);
        let scope = self.conn()?.temp_scope();
        let id = match (h.get("id"), h.get("destination")) {
            (Some(id), _) => Some(id.to_owned()),
            (None, Some(d)) if self.version == Version::V1_0 && durable.is_none() => {
                // 1.0 clients may unsubscribe by destination.
                let shown = Destination::parse(d, &scope)
                    .map(|d| d.display_for(&scope))
                    .unwrap_or_else(|_| d.to_owned());
                let key = self
                    .dest_headers
                    .iter()
                    .filter(|(_, (_, v))| *v == shown)
                    .map(|(k, _)| *k)
                    .min()
                    .ok_or_else(|| {
                        Fatal::protocol(format!("no subscription to '{d}' on this connection"))
                    })?;
                let conn = self.conn()?;
                conn.subscription_id(key).map(str::to_owned)
            }
            _ if durable.is_some() => None,
            _ => return Err(missing("UNSUBSCRIBE", "id")),
        };
        let conn = self.conn()?;
        let key = id.as_deref().and_then(|id| conn.subscription_key(id));
        let work = conn
            .unsubscribe(Unsubscribe {
                id: id.as_deref(),
                durable,
            })
            .await?;
        if let Some(key) = key {
            self.dest_headers.remove(&key);
        }
        self.after(0, receipt, work)
    }
}
