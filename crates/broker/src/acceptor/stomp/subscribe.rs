//! SUBSCRIBE and UNSUBSCRIBE, durable topic subscriptions included.
//!
//! A durable subscription is named as ActiveMQ names it over STOMP: the
//! connection's `client-id` plus `activemq.subscriptionName` on SUBSCRIBE
//! (`durable-subscription-name`, Artemis' spelling, works too). UNSUBSCRIBE
//! by `id` only detaches the consumer; UNSUBSCRIBE carrying the name also
//! removes the subscription and what was kept for it.

use std::collections::VecDeque;

use halyard_stomp::{Frame, Headers, Version};
use tokio::sync::oneshot;

use super::destination::StompDestination;
use super::error::{Fatal, missing};
use super::session::Session;
use super::subscriptions::{AckMode, Subscription};
use crate::core::{ConsumerReg, Control, DurableName};
use crate::model::{Destination, DestinationKind};

/// Prefetch headers, in order of preference: ActiveMQ's spelling first.
const PREFETCH_HEADERS: [&str; 2] = ["activemq.prefetchSize", "prefetch-count"];
/// Durable subscription name headers: ActiveMQ's, then Artemis'.
const DURABLE_HEADERS: [&str; 2] = ["activemq.subscriptionName", "durable-subscription-name"];

fn durable_header(h: &Headers) -> Option<&str> {
    DURABLE_HEADERS.iter().find_map(|n| h.get(n))
}

impl Session {
    /// The durable subscription a frame names, if any.
    fn durable_name(&self, h: &Headers) -> Result<Option<DurableName>, Fatal> {
        let Some(name) = durable_header(h) else {
            return Ok(None);
        };
        if name.is_empty() {
            return Err(Fatal::protocol(
                "durable subscription name must not be empty",
            ));
        }
        let client_id = self.client_id.as_deref().ok_or_else(|| {
            Fatal::protocol("durable subscriptions need a client-id header on CONNECT")
        })?;
        Ok(Some(DurableName {
            client_id: client_id.into(),
            name: name.into(),
        }))
    }

    pub(super) async fn subscribe(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let h = &frame.headers;
        let dest_header = h
            .get("destination")
            .ok_or_else(|| missing("SUBSCRIBE", "destination"))?;
        let dest = Destination::parse(dest_header, &self.temp_scope)
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
        let durable = self.durable_name(h)?;
        if durable.is_some() && dest.kind() != DestinationKind::Topic {
            return Err(Fatal::protocol(format!(
                "durable subscriptions are for topics, not {dest_header}"
            )));
        }
        if dest.kind() == DestinationKind::TempQueue && !dest.is_temp_of(&self.temp_scope) {
            return Err(Fatal::protocol(format!(
                "cannot subscribe to {dest_header}: it is another connection's temporary queue"
            )));
        }
        let handle = self.destination(&dest)?;
        let key = self.subs.next_key();
        let consumer = ConsumerReg {
            id: self.shared.next_consumer(),
            sub: key,
            prefetch,
            tx: self.deliveries_tx.clone(),
            records_deliveries: ack != AckMode::Auto,
            kick: self.kick.clone(),
        };
        let consumer_id = consumer.id;
        // (A destination reclaimed meanwhile is made anew: the subscription
        // keeps the handle that took it.)
        let (handle, registered) = match &durable {
            None => {
                let (done, registered) = oneshot::channel();
                let handle = self
                    .shared
                    .control(&handle, Control::Subscribe { consumer, done })
                    .await
                    .map_err(|e| Fatal::broker(e.to_string()))?;
                (handle, Some(registered))
            }
            Some(name) => {
                self.move_durable(name, &dest).await?;
                let (done, created) = oneshot::channel();
                let handle = self
                    .shared
                    .control(
                        &handle,
                        Control::SubscribeDurable {
                            name: name.clone(),
                            consumer,
                            done,
                        },
                    )
                    .await
                    .map_err(|e| Fatal::broker(e.to_string()))?;
                created
                    .await
                    .map_err(|_| Fatal::broker("destination stopped"))?
                    .map_err(Fatal::protocol)?;
                self.shared.set_durable_topic(name, Some(dest.clone()));
                (handle, None)
            }
        };
        self.subs.insert(
            key,
            Subscription {
                id,
                destination_header: dest.display_for(&self.temp_scope),
                handle,
                consumer: consumer_id,
                ack,
                unacked: VecDeque::new(),
            },
        );
        match registered {
            Some(registered) if receipt.is_some() => self.effects.push(
                0,
                Box::pin(async move {
                    registered
                        .await
                        .map_err(|_| Fatal::broker("destination stopped"))?;
                    Ok(receipt)
                }),
            ),
            _ => self.effects.receipt(receipt),
        }
        Ok(())
    }

    /// A durable subscription re-made on another topic replaces the old one
    /// (JMS semantics): the old one and its messages are removed.
    async fn move_durable(&mut self, name: &DurableName, topic: &Destination) -> Result<(), Fatal> {
        match self.shared.durable_topic(name) {
            Some(old) if &old != topic => self.remove_durable(name, &old).await,
            _ => Ok(()),
        }
    }

    async fn remove_durable(
        &mut self,
        name: &DurableName,
        topic: &Destination,
    ) -> Result<(), Fatal> {
        let handle = self.destination(topic)?;
        let (done, removed) = oneshot::channel();
        handle
            .control(Control::RemoveDurable {
                name: name.clone(),
                done,
            })
            .await
            .map_err(|e| Fatal::broker(e.to_string()))?;
        removed
            .await
            .map_err(|_| Fatal::broker("destination stopped"))?
            .map_err(Fatal::protocol)?;
        self.shared.set_durable_topic(name, None);
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
        let durable = self.durable_name(h)?;
        let sub = match (h.get("id"), h.get("destination")) {
            (Some(id), _) => Some(self.subs.remove(id).ok_or_else(|| {
                Fatal::protocol(format!("no subscription with id '{id}' on this connection"))
            })?),
            (None, Some(d)) if self.version == Version::V1_0 && durable.is_none() => {
                let shown = Destination::parse(d, &self.temp_scope)
                    .map(|d| d.display_for(&self.temp_scope))
                    .unwrap_or_else(|_| d.to_owned());
                Some(self.subs.remove_by_destination(&shown).ok_or_else(|| {
                    Fatal::protocol(format!("no subscription to '{d}' on this connection"))
                })?)
            }
            _ if durable.is_some() => None,
            _ => return Err(missing("UNSUBSCRIBE", "id")),
        };
        let mut removed = None;
        if let Some(sub) = sub {
            let (done, rx) = oneshot::channel();
            let _ = sub
                .handle
                .control(Control::Unsubscribe {
                    consumer: sub.consumer,
                    done: Some(done),
                })
                .await;
            removed = Some(rx);
        }
        if let Some(name) = durable {
            // The consumer must be detached before the subscription can go.
            if let Some(rx) = removed.take() {
                let _ = rx.await;
            }
            let topic = self.shared.durable_topic(&name).ok_or_else(|| {
                Fatal::protocol(format!(
                    "no durable subscription '{}' for client-id '{}'",
                    name.name, name.client_id
                ))
            })?;
            self.remove_durable(&name, &topic).await?;
        }
        match removed {
            Some(rx) if receipt.is_some() => self.effects.push(
                0,
                Box::pin(async move {
                    let _ = rx.await;
                    Ok(receipt)
                }),
            ),
            _ => self.effects.receipt(receipt),
        }
        Ok(())
    }
}
