//! SUBSCRIBE and UNSUBSCRIBE.

use std::collections::VecDeque;

use halyard_stomp::{Frame, Version};
use tokio::sync::oneshot;

use super::error::{Fatal, missing};
use super::session::Session;
use super::subscriptions::{AckMode, Subscription};
use crate::core::{ConsumerReg, Control, Destination, DestinationKind};

/// Prefetch headers, in order of preference: ActiveMQ's spelling first.
const PREFETCH_HEADERS: [&str; 2] = ["activemq.prefetchSize", "prefetch-count"];

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let h = &frame.headers;
        let dest_header = h
            .get("destination")
            .ok_or_else(|| missing("SUBSCRIBE", "destination"))?;
        let dest = Destination::parse(dest_header, &self.conn)
            .map_err(|e| Fatal::protocol(e.to_string()))?;
        // STOMP 1.0 made `id` optional; like ActiveMQ, use the destination.
        let id = match h.get("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => dest_header.to_owned(),
            None => return Err(missing("SUBSCRIBE", "id")),
        };
        if self.subs.contains_id(&id) {
            return Err(Fatal::protocol(format!(
                "subscription id '{id}' is already in use on this connection"
            )));
        }
        let max = self.shared.config.limits.max_subscriptions_per_connection;
        if self.subs.len() >= max {
            return Err(Fatal::protocol(format!(
                "too many subscriptions on this connection (limits.max-subscriptions-per-connection is {max})"
            )));
        }
        let ack = match h.get("ack") {
            None => AckMode::Auto,
            Some(a) => AckMode::parse(a).ok_or_else(|| {
                Fatal::protocol(format!(
                    "invalid ack mode '{a}': expected auto, client or client-individual"
                ))
            })?,
        };
        let prefetch = self.prefetch(&frame)?;
        if h.get("selector").is_some() {
            return Err(Fatal::protocol("message selectors are not supported"));
        }
        if h.get("activemq.subscriptionName").is_some()
            || h.get("durable-subscription-name").is_some()
        {
            return Err(Fatal::protocol(
                "durable subscriptions are not supported yet",
            ));
        }
        if dest.kind() == DestinationKind::TempQueue && !dest.is_temp_of(&self.conn) {
            return Err(Fatal::protocol(format!(
                "cannot subscribe to {dest_header}: it is another connection's temporary queue"
            )));
        }
        let handle = self.destination(&dest)?;
        let key = self.subs.next_key();
        let consumer = self.shared.next_consumer();
        let (done, registered) = oneshot::channel();
        handle
            .control(Control::Subscribe {
                consumer: ConsumerReg {
                    id: consumer,
                    sub: key,
                    prefetch,
                    tx: self.deliveries_tx.clone(),
                },
                done,
            })
            .await
            .map_err(|e| Fatal::broker(e.to_string()))?;
        self.subs.insert(
            key,
            Subscription {
                id,
                destination_header: dest.display_for(&self.conn),
                handle,
                consumer,
                ack,
                unacked: VecDeque::new(),
            },
        );
        if receipt.is_some() {
            self.effects.push(
                0,
                Box::pin(async move {
                    registered
                        .await
                        .map_err(|_| Fatal::broker("destination stopped"))?;
                    Ok(receipt)
                }),
            );
        }
        Ok(())
    }

    fn prefetch(&self, frame: &Frame) -> Result<u32, Fatal> {
        let max = self.shared.config.limits.max_prefetch;
        let Some((name, v)) = PREFETCH_HEADERS
            .iter()
            .find_map(|n| frame.headers.get(n).map(|v| (*n, v)))
        else {
            return Ok(self.shared.config.destinations.default_prefetch);
        };
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=max).contains(p))
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
        let sub = match (h.get("id"), h.get("destination")) {
            (Some(id), _) => self.subs.remove(id).ok_or_else(|| {
                Fatal::protocol(format!("no subscription with id '{id}' on this connection"))
            })?,
            (None, Some(d)) if self.version == Version::V1_0 => {
                let shown = Destination::parse(d, &self.conn)
                    .map(|d| d.display_for(&self.conn))
                    .unwrap_or_else(|_| d.to_owned());
                self.subs.remove_by_destination(&shown).ok_or_else(|| {
                    Fatal::protocol(format!("no subscription to '{d}' on this connection"))
                })?
            }
            _ => return Err(missing("UNSUBSCRIBE", "id")),
        };
        let (done, removed) = oneshot::channel();
        let _ = sub
            .handle
            .control(Control::Unsubscribe {
                consumer: sub.consumer,
                done: Some(done),
            })
            .await;
        if receipt.is_some() {
            self.effects.push(
                0,
                Box::pin(async move {
                    let _ = removed.await;
                    Ok(receipt)
                }),
            );
        }
        Ok(())
    }
}
