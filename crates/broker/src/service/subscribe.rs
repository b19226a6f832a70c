//! Subscribing and unsubscribing, durable topic subscriptions included.
//!
//! A durable subscription is named by the connection's client id plus a
//! subscription name. Unsubscribing by id only detaches the consumer;
//! unsubscribing with the durable name also removes the subscription and
//! what was kept for it.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::connection::Connection;
use super::error::ServiceError;
use super::subscriptions::{AckMode, Subscription};
use super::{Pending, ready};
use crate::core::{ConsumerReg, Control, DurableName, SubKey};
use crate::model::{Destination, DestinationKind};

/// What a client subscribes to, and how.
#[derive(Debug)]
pub(crate) struct SubscribeSpec {
    /// The client's id for the subscription, unique on its connection.
    pub(crate) id: String,
    pub(crate) destination: Destination,
    pub(crate) ack: AckMode,
    /// Deliveries in flight before acknowledgements are needed; `None` for
    /// the broker's default (`destinations.default-prefetch`).
    pub(crate) prefetch: Option<u32>,
    /// A durable topic subscription's name.
    pub(crate) durable: Option<String>,
    /// A message selector (not supported yet: refused).
    pub(crate) selector: Option<String>,
}

/// What an unsubscribe names.
#[derive(Debug, Default)]
pub(crate) struct Unsubscribe<'a> {
    /// The subscription to detach, by the client's id for it.
    pub(crate) id: Option<&'a str>,
    /// The durable subscription to remove, with what was kept for it.
    pub(crate) durable: Option<&'a str>,
}

impl Connection {
    /// The durable subscription `name` names for this connection.
    fn durable_name(&self, name: Option<&str>) -> Result<Option<DurableName>, ServiceError> {
        let Some(name) = name else {
            return Ok(None);
        };
        if name.is_empty() {
            return Err(ServiceError::EmptyDurableName);
        }
        let client_id = self
            .client_id
            .as_deref()
            .ok_or(ServiceError::DurableNeedsClientId)?;
        Ok(Some(DurableName {
            client_id: client_id.into(),
            name: name.into(),
        }))
    }

    /// Subscribes. Returns the subscription's key (which its deliveries
    /// carry) and work that completes once the destination has registered
    /// the consumer.
    pub(crate) async fn subscribe(
        &mut self,
        spec: SubscribeSpec,
    ) -> Result<(SubKey, Pending), ServiceError> {
        if self.subs.contains_id(&spec.id) {
            return Err(ServiceError::SubscriptionIdInUse(spec.id));
        }
        let core = self.service.core.clone();
        let max = core.config.limits.max_subscriptions_per_connection;
        if self.subs.len() >= max {
            return Err(ServiceError::TooManySubscriptions(max));
        }
        if spec.selector.is_some() {
            return Err(ServiceError::Unsupported("message selectors"));
        }
        let dest = spec.destination;
        let durable = self.durable_name(spec.durable.as_deref())?;
        if durable.is_some() && dest.kind() != DestinationKind::Topic {
            return Err(ServiceError::DurableNotOnTopic(dest));
        }
        if dest.kind() == DestinationKind::TempQueue && !dest.is_temp_of(&self.temp_scope) {
            return Err(ServiceError::OthersTempQueue(dest));
        }
        let handle = self.destination(&dest)?;
        let key = self.subs.next_key();
        let consumer = ConsumerReg {
            id: core.next_consumer(),
            sub: key,
            prefetch: spec
                .prefetch
                .unwrap_or(core.config.destinations.default_prefetch),
            tx: self.deliveries.clone(),
            records_deliveries: spec.ack != AckMode::Auto,
            kick: self.kick.clone(),
        };
        let consumer_id = consumer.id;
        // (A destination reclaimed meanwhile is made anew: the subscription
        // keeps the handle that took it.)
        let (handle, registered) = match &durable {
            None => {
                let (done, registered) = oneshot::channel();
                let handle = core
                    .control(&handle, Control::Subscribe { consumer, done })
                    .await
                    .map_err(|_| ServiceError::DestinationStopped)?;
                (handle, Some(registered))
            }
            Some(name) => {
                self.move_durable(name, &dest).await?;
                let (done, created) = oneshot::channel();
                let handle = core
                    .control(
                        &handle,
                        Control::SubscribeDurable {
                            name: name.clone(),
                            consumer,
                            done,
                        },
                    )
                    .await
                    .map_err(|_| ServiceError::DestinationStopped)?;
                created
                    .await
                    .map_err(|_| ServiceError::DestinationStopped)?
                    .map_err(ServiceError::Durable)?;
                self.service.durables.set(name, Some(dest.clone()));
                (handle, None)
            }
        };
        self.subs.insert(
            key,
            Subscription {
                id: spec.id,
                handle,
                consumer: consumer_id,
                ack: spec.ack,
                unacked: VecDeque::new(),
            },
        );
        let work = match registered {
            Some(registered) => Some(Box::pin(async move {
                registered
                    .await
                    .map_err(|_| ServiceError::DestinationStopped)
            }) as super::Work),
            None => ready(),
        };
        Ok((key, work))
    }

    /// A durable subscription re-made on another topic replaces the old one
    /// (JMS semantics): the old one and its messages are removed.
    async fn move_durable(
        &mut self,
        name: &DurableName,
        topic: &Destination,
    ) -> Result<(), ServiceError> {
        match self.service.durables.topic(name) {
            Some(old) if &old != topic => self.remove_durable(name, &old).await,
            _ => Ok(()),
        }
    }

    async fn remove_durable(
        &mut self,
        name: &DurableName,
        topic: &Destination,
    ) -> Result<(), ServiceError> {
        let handle = self.destination(topic)?;
        let (done, removed) = oneshot::channel();
        handle
            .control(Control::RemoveDurable {
                name: name.clone(),
                done,
            })
            .await
            .map_err(|_| ServiceError::DestinationStopped)?;
        removed
            .await
            .map_err(|_| ServiceError::DestinationStopped)?
            .map_err(ServiceError::Durable)?;
        self.service.durables.set(name, None);
        Ok(())
    }

    /// Detaches a subscription and/or removes a durable one. The returned
    /// work completes once the consumer is detached.
    pub(crate) async fn unsubscribe(
        &mut self,
        req: Unsubscribe<'_>,
    ) -> Result<Pending, ServiceError> {
        let durable = self.durable_name(req.durable)?;
        let sub = match req.id {
            Some(id) => {
                let key = self
                    .subs
                    .key_of(id)
                    .ok_or_else(|| ServiceError::NoSuchSubscription(id.to_owned()))?;
                self.subs.remove(key)
            }
            None => None,
        };
        let mut detached = None;
        if let Some(sub) = sub {
            let (done, rx) = oneshot::channel();
            let _ = sub
                .handle
                .control(Control::Unsubscribe {
                    consumer: sub.consumer,
                    done: Some(done),
                })
                .await;
            detached = Some(rx);
        }
        if let Some(name) = durable {
            // The consumer must be detached before the subscription can go.
            if let Some(rx) = detached.take() {
                let _ = rx.await;
            }
            let topic =
                self.service
                    .durables
                    .topic(&name)
                    .ok_or_else(|| ServiceError::NoSuchDurable {
                        client_id: name.client_id.to_string(),
                        name: name.name.to_string(),
                    })?;
            self.remove_durable(&name, &topic).await?;
        }
        Ok(match detached {
            Some(rx) => Some(Box::pin(async move {
                let _ = rx.await;
                Ok(())
            }) as super::Work),
            None => ready(),
        })
    }

    /// The key of the subscription the client calls `id`.
    pub(crate) fn subscription_key(&self, id: &str) -> Option<SubKey> {
        self.subs.key_of(id)
    }
}
