//! ActiveMQ's temporary-destination advisories, which a JMS client relies
//! on: it refuses to send to a temporary queue it has not been told exists
//! ("Cannot publish to a deleted Destination"). Every connection watches
//! `ActiveMQ.Advisory.TempQueue` and `…TempTopic` (its
//! `watchTopicAdvisories`, on by default); Halyard answers that consumer
//! with the temporary destinations JMS clients made, as they come and go,
//! and — just before a message whose `JMSReplyTo` names one — with the
//! temporary destination it names (a STOMP client's, whose name is a secret
//! shared only with those it sends it to). No other advisory is published.

use std::collections::HashSet;

use halyard_openwire::{self as ow, Command};
use tokio::sync::broadcast;

use super::convert;
use super::session::Session;
use super::state::Advisories;
use crate::model::{Destination, DestinationKind};
use crate::service::temporary::TempEvent;

/// The advisory topics' prefix.
pub(super) const PREFIX: &str = "ActiveMQ.Advisory.";
const TEMP_QUEUE_TOPIC: &str = "ActiveMQ.Advisory.TempQueue";
const TEMP_TOPIC_TOPIC: &str = "ActiveMQ.Advisory.TempTopic";

/// Whether `dests` are advisory topics only (no real subscription).
pub(super) fn is_advisory(dests: &[Destination]) -> bool {
    dests
        .iter()
        .all(|d| d.kind().is_topic() && d.name().starts_with(PREFIX))
}

impl Session {
    /// An advisory consumer subscribed: if it watches temporary
    /// destinations, it is told the live ones, then their changes.
    pub(super) fn watch_advisories(&mut self, consumer: ow::ConsumerId, dests: &[Destination]) {
        let watches = dests
            .iter()
            .any(|d| d.name() == TEMP_QUEUE_TOPIC || d.name() == TEMP_TOPIC_TOPIC);
        if !watches || self.advisories.is_some() {
            return;
        }
        let (live, events) = self.service.temporaries.watch();
        self.advisories = Some(Advisories {
            consumer,
            events,
            announced: HashSet::new(),
            next_seq: 0,
        });
        for d in live {
            self.announce(&d, true, true);
        }
    }

    /// A temporary destination came or went.
    pub(super) fn temp_event(&mut self, e: Result<TempEvent, broadcast::error::RecvError>) {
        match e {
            Ok(e) if e.added && e.public => self.announce(&e.dest, true, true),
            Ok(e) if !e.added => self.announce(&e.dest, false, e.public),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(conn = %self.conn_id, missed = n,
                    "temporary-destination advisories fell behind; some were not sent");
            }
            Err(broadcast::error::RecvError::Closed) => self.advisories = None,
        }
    }

    /// Before a message naming temporary destination `d` as its reply-to
    /// goes out: tell the client `d` exists, if it is alive.
    pub(super) fn announce_reply_to(&mut self, d: &Destination) {
        let known = match &self.advisories {
            Some(a) => a.announced.contains(d),
            None => return,
        };
        if !known && self.service.temporaries.is_live(d) {
            self.announce(d, true, false);
        }
    }

    /// Sends the advisory consumer a `DestinationInfo` for `d`; `public`:
    /// its name is no secret.
    fn announce(&mut self, d: &Destination, added: bool, public: bool) {
        let boot = self.service.boot().to_owned();
        let Some(a) = self.advisories.as_mut() else {
            return;
        };
        if added {
            if !a.announced.insert(d.clone()) {
                return;
            }
        } else if !a.announced.remove(d) && !public {
            // A removal of what it was never told of, and whose name is a
            // secret: nothing to say.
            return;
        }
        a.next_seq += 1;
        let topic = ow::Destination::topic(match d.kind() {
            DestinationKind::TempTopic => TEMP_TOPIC_TOPIC,
            _ => TEMP_QUEUE_TOPIC,
        });
        let info = ow::DestinationInfo {
            destination: Some(convert::destination(d)),
            operation_type: if added { 0 } else { 1 },
            ..ow::DestinationInfo::default()
        };
        let message = ow::Message {
            kind: ow::MessageKind::Plain,
            destination: Some(topic.clone()),
            message_id: Some(ow::MessageId {
                producer_id: Some(ow::ProducerId {
                    connection_id: Some(format!("ID:{boot}-advisory")),
                    value: 0,
                    session_id: 0,
                }),
                producer_sequence_id: a.next_seq,
                ..ow::MessageId::default()
            }),
            priority: crate::model::DEFAULT_PRIORITY,
            timestamp: i64::try_from(crate::model::now_ms()).unwrap_or(0),
            data_structure: Some(Box::new(Command::DestinationInfo(info))),
            ..ow::Message::default()
        };
        let dispatch = ow::MessageDispatch {
            consumer_id: Some(a.consumer.clone()),
            destination: Some(topic),
            message: Some(message),
            ..ow::MessageDispatch::default()
        };
        self.send(Command::MessageDispatch(dispatch));
    }
}
