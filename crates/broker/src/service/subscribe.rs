//! Subscribing and unsubscribing, durable topic subscriptions included.
//!
//! A durable subscription is named by the connection's client id plus a
//! subscription name. Unsubscribing by id only detaches the consumer;
//! unsubscribing with the durable name also removes the subscription and
//! what was kept for it.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::connection::Connection;
use super::error::ServiceError;
use super::subscriptions::{AckMode, Credit, Recent, Subscription};
use super::{Pending, Right, ready};
use crate::core::{ConsumerId, ConsumerReg, Control, DurableName, Registrations, SubKey};
use crate::model::{Destination, DestinationKind, NamePattern};

/// A browser's prefetch when it asks for none (ActiveMQ's queue browser
/// prefetch).
const BROWSER_PREFETCH: u32 = 500;

/// What a client subscribes to, and how.
#[derive(Debug)]
pub(crate) struct SubscribeSpec {
    /// The client's id for the subscription, unique on its connection.
    pub(crate) id: String,
    /// What it takes messages from: one destination, or several (a
    /// composite destination); each may be a wildcard.
    pub(crate) destinations: Vec<Destination>,
    pub(crate) ack: AckMode,
    /// Deliveries in flight before acknowledgements are needed; `None` for
    /// the broker's default (`destinations.default-prefetch`).
    pub(crate) prefetch: Option<u32>,
    /// A durable topic subscription's name.
    pub(crate) durable: Option<String>,
    /// A JMS message selector (docs/SELECTORS.md); empty means none.
    pub(crate) selector: Option<String>,
    /// A queue browser: shown the queue's messages without taking them.
    pub(crate) browse: bool,
    /// Consumer priority (ActiveMQ's, 0 by default): a queue serves the
    /// highest-priority consumers with credit first.
    pub(crate) priority: i8,
    /// An exclusive consumer: a queue's only receiver while it lives.
    pub(crate) exclusive: bool,
    /// On topics: not the messages this connection publishes.
    pub(crate) no_local: bool,
    /// On topics: at most this many messages waiting for it before the
    /// oldest are dropped, instead of `destinations.subscriber-pending-limit`.
    pub(crate) pending_limit: Option<usize>,
}

#[cfg(test)]
impl SubscribeSpec {
    /// A plain subscription to `destination`.
    pub(crate) fn new(id: impl Into<String>, destination: Destination, ack: AckMode) -> Self {
        SubscribeSpec {
            id: id.into(),
            destinations: vec![destination],
            ack,
            prefetch: None,
            durable: None,
            selector: None,
            browse: false,
            priority: 0,
            exclusive: false,
            no_local: false,
            pending_limit: None,
        }
    }
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

    /// Checks what a subscription asks for before anything is registered.
    fn check(&self, spec: &SubscribeSpec) -> Result<(), ServiceError> {
        if self.subs.contains_id(&spec.id) {
            return Err(ServiceError::SubscriptionIdInUse(spec.id.clone()));
        }
        let core = &self.service.core;
        let max = core.config.limits.max_subscriptions_per_connection;
        if self.subs.len() >= max {
            return Err(ServiceError::TooManySubscriptions(max));
        }
        let [first, rest @ ..] = spec.destinations.as_slice() else {
            return Err(ServiceError::NoDestination);
        };
        for d in &spec.destinations {
            if NamePattern::is_wildcard(d.name()) {
                if d.kind().is_temporary() {
                    return Err(ServiceError::WildcardTemporary(d.clone()));
                }
                NamePattern::parse(d.name()).map_err(ServiceError::InvalidPattern)?;
            }
            if d.kind().is_temporary() && !d.is_temp_of(&self.temp_scope) {
                return Err(ServiceError::OthersTemporary(d.clone()));
            }
        }
        for d in &spec.destinations {
            self.authorize(Right::Read, d)?;
        }
        if spec.durable.is_some() {
            if !rest.is_empty() {
                return Err(ServiceError::DurableComposite);
            }
            if first.kind() != DestinationKind::Topic {
                return Err(ServiceError::DurableNotOnTopic(first.clone()));
            }
        }
        if spec.browse {
            if !rest.is_empty() || NamePattern::is_wildcard(first.name()) {
                return Err(ServiceError::BrowseOne);
            }
            if first.kind().is_topic() {
                return Err(ServiceError::BrowseNotQueue(first.clone()));
            }
            if spec.durable.is_some() {
                return Err(ServiceError::DurableNotOnTopic(first.clone()));
            }
        }
        Ok(())
    }

    /// Subscribes. Returns the subscription's key (which its deliveries
    /// carry) and work that completes once every destination has registered
    /// the consumer.
    pub(crate) async fn subscribe(
        &mut self,
        spec: SubscribeSpec,
    ) -> Result<(SubKey, Pending), ServiceError> {
        self.check(&spec)?;
        let selector = match &spec.selector {
            Some(text) => self.service.selector(text)?,
            None => None,
        };
        let core = self.service.core.clone();
        let durable = self.durable_name(spec.durable.as_deref())?;
        let key = self.subs.next_key();
        let registrations = Registrations::default();
        // Several destinations share the subscription's prefetch.
        let several = spec.destinations.len() > 1
            || spec
                .destinations
                .iter()
                .any(|d| d.kind() == DestinationKind::Queue && NamePattern::is_wildcard(d.name()));
        let credit = several.then(|| Credit {
            shared: Arc::default(),
            registrations: registrations.clone(),
        });
        let template = ConsumerReg {
            id: ConsumerId(0),
            sub: key,
            prefetch: spec.prefetch.unwrap_or(if spec.browse {
                BROWSER_PREFETCH
            } else {
                // The policy of the (first) destination subscribed to.
                spec.destinations
                    .first()
                    .map_or(core.config.destinations.default_prefetch, |d| {
                        core.policies
                            .for_destination(d.kind(), d.name())
                            .default_prefetch
                    })
            }),
            tx: self.deliveries.clone(),
            records_deliveries: spec.ack != AckMode::Auto && !spec.browse,
            kick: self.kick.clone(),
            priority: spec.priority,
            exclusive: spec.exclusive,
            no_local: spec.no_local.then_some(self.number),
            pending_limit: spec.pending_limit,
            shared: credit.as_ref().map(|c| c.shared.clone()),
            selector,
        };
        let mut wildcard = None;
        let mut registered = Vec::new();
        let mut declarations = Vec::new();
        for dest in &spec.destinations {
            if dest.kind() == DestinationKind::Queue && NamePattern::is_wildcard(dest.name()) {
                let pattern =
                    NamePattern::parse(dest.name()).map_err(ServiceError::InvalidPattern)?;
                let (id, existing) =
                    core.add_wildcard_consumer(pattern, template.clone(), registrations.clone());
                wildcard = Some(id);
                for handle in existing {
                    let consumer = template.with_id(core.next_consumer());
                    let id = consumer.id;
                    let (done, rx) = oneshot::channel();
                    // A queue reclaimed meanwhile is made anew with this
                    // subscription registered: nothing to do here then.
                    if handle
                        .control_or_back(Control::Subscribe { consumer, done })
                        .await
                        .is_ok()
                    {
                        registrations.add(id, handle);
                        registered.push(rx);
                    }
                }
                continue;
            }
            let handle = self.destination(dest)?;
            if let Some(declared) = self.declare(dest).await? {
                declarations.push(declared);
            }
            let consumer = template.with_id(core.next_consumer());
            let consumer_id = consumer.id;
            // (A destination reclaimed meanwhile is made anew: the
            // subscription keeps the handle that took it.)
            let handle = match &durable {
                None => {
                    let (done, rx) = oneshot::channel();
                    let control = if spec.browse {
                        Control::Browse { consumer, done }
                    } else {
                        Control::Subscribe { consumer, done }
                    };
                    let handle = core
                        .control(&handle, control)
                        .await
                        .map_err(|_| ServiceError::DestinationStopped)?;
                    registered.push(rx);
                    handle
                }
                Some(name) => {
                    self.move_durable(name, dest).await?;
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
                    handle
                }
            };
            registrations.add(consumer_id, handle);
        }
        let view = super::directory::SubscriptionView {
            id: spec.id.clone(),
            destination: spec
                .destinations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            selector: spec.selector.clone().filter(|s| !s.is_empty()),
            durable: spec.durable.clone(),
            browser: spec.browse,
        };
        self.subs.insert(
            key,
            Subscription {
                id: spec.id,
                registrations,
                ack: if spec.browse { AckMode::Auto } else { spec.ack },
                unacked: VecDeque::new(),
                browser: spec.browse,
                wildcard,
                seen: VecDeque::new(),
                recent: credit.as_ref().map(|_| Recent::default()),
                credit,
            },
            view,
        );
        let work = if registered.is_empty() && declarations.is_empty() {
            ready()
        } else {
            Some(Box::pin(async move {
                for d in declarations {
                    d.await?;
                }
                for r in registered {
                    r.await.map_err(|_| ServiceError::DestinationStopped)?;
                }
                Ok(())
            }) as super::Work)
        };
        Ok((key, work))
    }

    /// Ends a subscription: it is taken off the table of wildcard
    /// subscriptions, then detached from every destination. `detached`
    /// collects what tells when each destination has let go.
    pub(super) async fn end_subscription(
        &mut self,
        sub: Subscription,
        mut detached: Option<&mut Vec<oneshot::Receiver<()>>>,
    ) {
        if let Some(id) = sub.wildcard {
            self.service.core.remove_wildcard_consumer(id);
        }
        for (consumer, handle) in sub.registrations.take_all() {
            let done = match detached.as_deref_mut() {
                Some(v) => {
                    let (done, rx) = oneshot::channel();
                    v.push(rx);
                    Some(done)
                }
                None => None,
            };
            let _ = handle
                .control(Control::Unsubscribe { consumer, done })
                .await;
        }
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
        let mut detached = Vec::new();
        if let Some(sub) = sub {
            self.end_subscription(sub, Some(&mut detached)).await;
        }
        if let Some(name) = durable {
            // The consumer must be detached before the subscription can go.
            for rx in detached.drain(..) {
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
        Ok(if detached.is_empty() {
            ready()
        } else {
            Some(Box::pin(async move {
                for rx in detached {
                    let _ = rx.await;
                }
                Ok(())
            }) as super::Work)
        })
    }

    /// Changes subscription `id`'s prefetch (at every destination it takes
    /// from); the destinations send more at once if it grew.
    pub(crate) async fn set_prefetch(
        &mut self,
        id: &str,
        prefetch: u32,
    ) -> Result<(), ServiceError> {
        let key = self
            .subs
            .key_of(id)
            .ok_or_else(|| ServiceError::NoSuchSubscription(id.to_owned()))?;
        let Some(sub) = self.subs.get(key) else {
            return Err(ServiceError::NoSuchSubscription(id.to_owned()));
        };
        let max = self.service.core.config.limits.max_prefetch;
        let prefetch = prefetch.clamp(1, max);
        for (consumer, handle) in sub.registrations.all() {
            let _ = handle
                .control(Control::Prefetch { consumer, prefetch })
                .await;
        }
        Ok(())
    }

    /// The key of the subscription the client calls `id`.
    pub(crate) fn subscription_key(&self, id: &str) -> Option<SubKey> {
        self.subs.key_of(id)
    }
}
