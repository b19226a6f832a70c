//! Where a sent message goes: the copies one SEND makes.
//!
//! A message goes to its destination and, if it names several (a composite
//! destination, `/queue/a,/topic/b`), to each of them. A message to a topic
//! also goes to every topic named by a wildcard that matches it
//! (`/topic/orders.>`: the subscribers of the pattern see every matching
//! topic) and, if the topic is a virtual topic, into each of its consumer
//! queues that exists at that moment (`Consumer.A.VirtualTopic.Orders`).
//!
//! Each copy bound for a queue is a message of its own: its own sequence
//! number (its identity in the store) and its queue as destination, with
//! the id, properties and body of the original (the body is shared, not
//! copied). Copies for topics share the topic's message. Every copy a SEND
//! stores goes into one store batch, so a receipt or a commit covers all of
//! them or none.

use std::sync::Arc;

use super::connection::Connection;
use super::copy::{Copies, Copy};
use super::error::ServiceError;
use crate::core::{BrokerCore, Envelope, ORIGINAL_DESTINATION};
use crate::model::{Destination, DestinationKind, Message, NamePattern, Properties, Value};

impl Connection {
    /// The copies of `message` (stamped, for its first destination) that
    /// sending it to its destination and `also` makes.
    pub(super) async fn route(
        &mut self,
        message: Message,
        also: &[Destination],
    ) -> Result<Copies, ServiceError> {
        let core = self.service.core.clone();
        let first = message.destination.clone();
        let listed = || std::iter::once(&first).chain(also);
        if let Some(d) = listed().find(|d| NamePattern::is_wildcard(d.name())) {
            return Err(ServiceError::WildcardSend(d.clone()));
        }
        // Worked out while the properties are at hand: queues need it.
        let envelope = Envelope::of(&message, self.number);
        let message = Arc::new(message);
        let mut copies = Copies::with_capacity(1 + also.len());
        for (i, d) in listed().enumerate() {
            // A destination listed twice gets one copy.
            if i > 0 && (*d == first || also[..i - 1].contains(d)) {
                continue;
            }
            let handle = self.resolve_for_send(d)?;
            // A consumer queue made by a message sent to it is remembered
            // too; the send's own batch is durable after the declaration.
            self.declare(d).await?;
            let m = if copies.is_empty() {
                message.clone()
            } else {
                copy_of(&core, &message, d, None)
            };
            let is_topic = d.kind() == DestinationKind::Topic;
            let primary = copies.is_empty();
            copies.push(Copy {
                handle,
                message: m,
                primary,
                envelope,
            });
            if is_topic {
                let m = copies[copies.len() - 1].message.clone();
                for h in core.pattern_topics_for(d.name()) {
                    copies.push(Copy {
                        handle: Some(h),
                        message: m.clone(),
                        primary: false,
                        envelope,
                    });
                }
                for q in core.virtual_topic_queues(d.name()) {
                    let handle = Some(self.destination(&q)?);
                    // As ActiveMQ does, a consumer queue's copy says which
                    // topic it was sent to.
                    let properties: Properties = m
                        .properties
                        .iter()
                        .filter(|(k, _)| *k != ORIGINAL_DESTINATION)
                        .map(|(k, v)| (k.to_owned(), v.clone()))
                        .chain([(
                            ORIGINAL_DESTINATION.to_owned(),
                            Value::String(d.to_string()),
                        )])
                        .collect();
                    copies.push(Copy {
                        handle,
                        message: copy_of(&core, &m, &q, Some(properties)),
                        primary: false,
                        envelope,
                    });
                }
            }
        }
        Ok(copies)
    }
}

/// A copy of `m` for destination `to`: a sequence number of its own, the
/// same id and (shared) body, and its properties unless `properties` are
/// given.
fn copy_of(
    core: &BrokerCore,
    m: &Arc<Message>,
    to: &Destination,
    properties: Option<Properties>,
) -> Arc<Message> {
    let mut copy = Message {
        seq: core.next_seq(),
        destination: to.clone(),
        ..(**m).clone()
    };
    if let Some(p) = properties {
        copy.properties = p;
    }
    Arc::new(copy)
}
