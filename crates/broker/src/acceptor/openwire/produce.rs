//! Producers and their messages.
//!
//! A persistent message sent outside a transaction comes with
//! `response_required` (the JMS client's synchronous send): its Response
//! goes out once the message is stored, as ActiveMQ answers. An
//! asynchronous send from a producer with a window (`producerWindowSize`)
//! gets a `ProducerAck` once taken in, which is what lets the client send
//! more: the window is the producer's flow control.

use halyard_openwire as ow;

use super::convert::{self, ConvertError};
use super::error::{INVALID_DESTINATION, JMS_EXCEPTION};
use super::session::{Fatal, Reply, Session};
use super::state::Producer;
use super::transaction::tx_name;

/// The size a JMS client counts a message as against its producer window
/// (ActiveMQ's `Message.getSize()`), which the ProducerAck must give back
/// exactly.
fn window_size(m: &ow::Message) -> i32 {
    const MINIMUM: usize = 1024;
    let n = MINIMUM
        + m.marshalled_properties.as_ref().map_or(0, |b| b.len())
        + m.content.as_ref().map_or(0, |b| b.len());
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Session {
    /// `ProducerInfo`: remember the producer's window.
    pub(super) fn producer_info(&mut self, p: ow::ProducerInfo) -> Result<(), Fatal> {
        if let Some(id) = &p.producer_id {
            // A producer of one destination counts as its producer; an
            // anonymous one (a destination per message) counts nowhere.
            let listed = p
                .destination
                .as_ref()
                .and_then(|d| convert::destinations(d).ok())
                .and_then(|ds| ds.into_iter().next())
                .map(|d| self.service.directory.producer(d.to_string()));
            self.producers.by_id.insert(
                (id.session_id, id.value),
                Producer {
                    window: p.window_size,
                    _listed: listed,
                },
            );
        }
        self.reply(Reply::to(p.command_id, p.response_required))
    }

    /// A message from a producer.
    pub(super) async fn message(&mut self, m: ow::Message) -> Result<(), Fatal> {
        let arrived = std::time::Instant::now();
        let (id, required) = (m.command_id, m.response_required);
        let windowed = m
            .producer_id
            .as_ref()
            .filter(|_| !required)
            .filter(|p| {
                self.producers
                    .by_id
                    .get(&(p.session_id, p.value))
                    .is_some_and(|p| p.window > 0)
            })
            .map(|p| (p.clone(), window_size(&m)));
        let max_body = self.service.core.config.limits.max_body_bytes;
        let converted = m
            .destination
            .as_ref()
            .ok_or_else(|| ConvertError::Destination("a message needs a destination".into()))
            .and_then(convert::destinations)
            .and_then(|mut ds| {
                let first = ds.remove(0);
                convert::incoming(&m, first, ds, max_body)
            });
        let new = match converted {
            Ok(n) => n,
            Err(e) => {
                let class = match e {
                    ConvertError::Destination(_) => INVALID_DESTINATION,
                    _ => JMS_EXCEPTION,
                };
                self.refuse(id, required, class, e.to_string())?;
                return self.give_window_back(windowed);
            }
        };
        let tx = match &m.transaction_id {
            Some(ow::TransactionId::Local(t)) => Some(tx_name(t)),
            Some(ow::TransactionId::Xa(_)) => {
                self.refuse(
                    id,
                    required,
                    super::error::NOT_SUPPORTED,
                    "XA transactions are not supported".into(),
                )?;
                return self.give_window_back(windowed);
            }
            None => None,
        };
        let timed = (required && new.persistent && tx.is_none()).then_some(arrived);
        let sent = self.conn()?.send(new, tx.as_deref(), false).await;
        match sent {
            Ok(sent) => {
                let reply = Reply {
                    correlation: required.then_some(id),
                    producer_ack: windowed,
                    timed,
                    ..Reply::default()
                };
                self.after(sent.bytes, reply, sent.work)
            }
            Err(e) => {
                self.refuse_service(id, required, &e)?;
                self.give_window_back(windowed)
            }
        }
    }

    /// A refused message still gives its producer window back.
    fn give_window_back(&mut self, windowed: Option<(ow::ProducerId, i32)>) -> Result<(), Fatal> {
        if windowed.is_none() {
            return Ok(());
        }
        self.reply(Reply {
            producer_ack: windowed,
            ..Reply::default()
        })
    }
}
