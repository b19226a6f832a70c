//! Consumers: subscribing (`ConsumerInfo`), dispatching (`MessageDispatch`),
//! acknowledging (`MessageAck`), pulling (`MessagePull`, a consumer with
//! prefetch 0) and closing.
//!
//! Every consumer subscribes with individual acknowledgement: JMS's
//! acknowledge modes live in the client, which tells the broker what it
//! acknowledges in ranges (a standard ack covers every message the consumer
//! was sent up to the one it names) or one by one. Acknowledgements name
//! messages by the `broker_sequence_id` the broker put in their ids.

use std::collections::VecDeque;

use halyard_openwire::{self as ow, Command};
use tokio::time::Instant;

use super::advisory;
use super::convert::{self, Delivered};
use super::error::{INVALID_DESTINATION, JMS_EXCEPTION};
use super::session::{Fatal, Reply, Session, join};
use super::state::{Consumer, Key, Pull, key};
use super::transaction::tx_name;
use crate::core::{Delivery, Note};
use crate::service::{AckMode, AckRef, AckRequest, Pending, SubscribeSpec, Tracked, Unsubscribe};

/// Standard, unmatched and expired acknowledgements take messages for
/// good; delivered and redelivered ones only report progress; a poison one
/// gives up on them; an individual one takes one message.
mod ack_type {
    pub(super) const DELIVERED: u8 = 0;
    pub(super) const POISON: u8 = 1;
    pub(super) const STANDARD: u8 = 2;
    pub(super) const REDELIVERED: u8 = 3;
    pub(super) const INDIVIDUAL: u8 = 4;
    pub(super) const UNMATCHED: u8 = 5;
    pub(super) const EXPIRED: u8 = 6;
}

impl Session {
    /// `ConsumerInfo`: subscribe.
    pub(super) async fn consumer_info(&mut self, c: ow::ConsumerInfo) -> Result<(), Fatal> {
        let (cid, required) = (c.command_id, c.response_required);
        let Some(id) = c.consumer_id.clone() else {
            return self.refuse(
                cid,
                required,
                JMS_EXCEPTION,
                "ConsumerInfo without an id".into(),
            );
        };
        if self.consumers.by_id.contains_key(&key(&id)) {
            return self.refuse(
                cid,
                required,
                super::error::ILLEGAL_STATE,
                "a consumer with this id exists already".into(),
            );
        }
        let dests = match c.destination.as_ref().map(convert::destinations) {
            Some(Ok(ds)) => ds,
            Some(Err(e)) => return self.refuse(cid, required, INVALID_DESTINATION, e.to_string()),
            None => {
                return self.refuse(
                    cid,
                    required,
                    INVALID_DESTINATION,
                    "a consumer needs a destination".into(),
                );
            }
        };
        let sub_id = format!("{}:{}", id.session_id, id.value);
        if advisory::is_advisory(&dests) {
            self.watch_advisories(id.clone(), &dests);
            self.consumers.by_id.insert(
                key(&id),
                Consumer {
                    id,
                    sub: None,
                    sub_id,
                    unacked: VecDeque::new(),
                    pull: None,
                    prefetch: 0,
                    delivered: 0,
                    applied: 0,
                },
            );
            return self.reply(Reply::to(cid, required));
        }
        let max = self.service.core.config.limits.max_prefetch;
        let pull = c.prefetch_size == 0 && !c.browser;
        let prefetch = if pull {
            1
        } else {
            u32::try_from(c.prefetch_size).unwrap_or(1).clamp(1, max)
        };
        let durable = c
            .subscription_name
            .clone()
            .filter(|_| dests.iter().all(|d| d.kind().is_topic()));
        let spec = SubscribeSpec {
            id: sub_id.clone(),
            destinations: dests,
            ack: AckMode::Individual,
            prefetch: Some(prefetch),
            durable,
            selector: c.selector.clone().filter(|s| !s.trim().is_empty()),
            browse: c.browser,
            priority: i8::try_from(c.priority).unwrap_or(i8::MAX),
            exclusive: c.exclusive,
            no_local: c.no_local,
            pending_limit: usize::try_from(c.maximum_pending_message_limit)
                .ok()
                .filter(|n| *n > 0),
        };
        match self.conn()?.subscribe(spec).await {
            Ok((sub, work)) => {
                self.consumers.by_sub.insert(sub, key(&id));
                self.consumers.by_id.insert(
                    key(&id),
                    Consumer {
                        id,
                        sub: Some(sub),
                        sub_id,
                        unacked: VecDeque::new(),
                        pull: pull.then(Pull::default),
                        prefetch: if pull { 0 } else { prefetch },
                        delivered: 0,
                        applied: prefetch,
                    },
                );
                self.after(0, Reply::to(cid, required), work)
            }
            Err(e) => self.refuse_service(cid, required, &e),
        }
    }

    /// Closes consumer `id`: what it was sent and did not acknowledge goes
    /// back to be redelivered.
    pub(super) async fn close_consumer(&mut self, id: &ow::ConsumerId) -> Result<Pending, Fatal> {
        let Some(c) = self.consumers.by_id.remove(&key(id)) else {
            return Ok(None);
        };
        let Some(sub) = c.sub else {
            return Ok(None);
        };
        self.consumers.by_sub.remove(&sub);
        // Acknowledgements a transaction holds for it can no longer be
        // made: that transaction will roll back.
        self.txs.consumer_closed(&key(id));
        let request = Unsubscribe {
            id: Some(&c.sub_id),
            durable: None,
        };
        self.conn()?
            .unsubscribe(request)
            .await
            .map_err(|e| Fatal::broker(format!("cannot close a consumer: {e}")))
    }

    /// A delivery for one of the consumers.
    pub(super) fn deliver(&mut self, d: Delivery) {
        let Some(k) = self.consumers.by_sub.get(&d.sub).copied() else {
            return;
        };
        if let Some(pull) = self
            .consumers
            .by_id
            .get_mut(&k)
            .and_then(|c| c.pull.as_mut())
        {
            if pull.waiting.is_none() {
                // Held until the client asks (its prefetch of one keeps
                // the broker from sending another meanwhile).
                pull.held = Some(d);
                return;
            }
            pull.waiting = None;
        }
        self.dispatch(k, d);
    }

    /// Writes a MessageDispatch for a delivery to consumer `k`.
    fn dispatch(&mut self, k: Key, d: Delivery) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(tracked) = conn.delivering(&d) else {
            // The subscription ended; the message went back already.
            return;
        };
        let Some(consumer_id) = self.consumers.by_id.get(&k).map(|c| c.id.clone()) else {
            return;
        };
        let message = match tracked {
            Tracked::Duplicate => return,
            // A browser's end: a dispatch without a message.
            Tracked::EndOfBrowse => None,
            Tracked::Token(_) | Tracked::Auto | Tracked::Browsed => {
                if let Some(r) = convert::temp_reply_to(&d.message) {
                    self.announce_reply_to(&r);
                }
                let how = Delivered {
                    deliveries: d.deliveries,
                    first_of_group: d.note == Note::FirstOfGroup,
                };
                match convert::outgoing(&d.message, &how) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // Not sent, and not to be acknowledged: it goes back
                        // to its destination when the consumer closes.
                        tracing::error!(conn = %self.conn_id, error = %e,
                            "cannot encode a message for an OpenWire consumer; not sent");
                        return;
                    }
                }
            }
        };
        if let (Tracked::Token(t), Some(c)) = (tracked, self.consumers.by_id.get_mut(&k)) {
            c.unacked.push_back((d.message.seq, t));
        }
        let dispatch = ow::MessageDispatch {
            consumer_id: Some(consumer_id),
            destination: message.as_ref().and_then(|m| m.destination.clone()),
            redelivery_counter: message.as_ref().map_or(0, |m| m.redelivery_counter),
            message,
            ..ow::MessageDispatch::default()
        };
        self.send(Command::MessageDispatch(dispatch));
    }

    /// `ConsumerControl` from a client sets a consumer's prefetch: after a
    /// failover, ActiveMQ's client restores its consumers with prefetch 0
    /// until its recovery is done, then sets their real prefetch this way.
    pub(super) async fn consumer_control(&mut self, c: ow::ConsumerControl) -> Result<(), Fatal> {
        let reply = Reply::to(c.command_id, c.response_required);
        let Some(k) = c.consumer_id.as_ref().map(key) else {
            return self.reply(reply);
        };
        let prefetch = u32::try_from(c.prefetch).unwrap_or(0);
        let Some(consumer) = self.consumers.by_id.get_mut(&k) else {
            return self.reply(reply);
        };
        if consumer.sub.is_none() || c.close || prefetch == 0 {
            // Advisory consumers, closes (a broker's request, not a
            // client's) and pull mode asked for later are not supported.
            return self.reply(reply);
        }
        let sub_id = consumer.sub_id.clone();
        consumer.prefetch = prefetch;
        consumer.applied = prefetch;
        let held = consumer.pull.take().and_then(|p| p.held);
        if let Some(d) = held {
            self.dispatch(k, d);
        }
        if let Err(e) = self.conn()?.set_prefetch(&sub_id, prefetch).await {
            tracing::debug!(conn = %self.conn_id, error = %e, "cannot change a consumer's prefetch");
        }
        self.reply(reply)
    }

    /// `MessagePull`: a consumer with prefetch 0 asks for a message.
    pub(super) async fn pull(&mut self, p: ow::MessagePull) -> Result<(), Fatal> {
        let Some(k) = p.consumer_id.as_ref().map(key) else {
            return Ok(());
        };
        let Some(pull) = self
            .consumers
            .by_id
            .get_mut(&k)
            .and_then(|c| c.pull.as_mut())
        else {
            // A consumer with a prefetch already gets messages.
            return Ok(());
        };
        if let Some(d) = pull.held.take() {
            self.dispatch(k, d);
            return Ok(());
        }
        let waiting = match p.timeout {
            // receiveNoWait(): nothing is here, so say so at once.
            t if t < 0 => None,
            // receive(): wait for ever.
            0 => Some(None),
            t => {
                let ms = u64::try_from(t).unwrap_or(0);
                Some(Some(Instant::now() + std::time::Duration::from_millis(ms)))
            }
        };
        pull.waiting = waiting;
        if waiting.is_none() {
            self.pull_done(k);
            return Ok(());
        }
        // The messages it holds unacknowledged (say, in a transaction)
        // must not keep the next one from coming.
        self.extend_prefetch(k).await;
        Ok(())
    }

    /// Sets consumer `k`'s prefetch in the service to what it asked for
    /// plus what it holds without counting against it: messages its client
    /// reported delivered, and those an open transaction acknowledged
    /// (ActiveMQ's prefetch extension, without which a transacted consumer
    /// would stop after its prefetch, and a pulling one after one message,
    /// until it commits). A pulling consumer's pull asks for one more.
    pub(super) async fn extend_prefetch(&mut self, k: Key) {
        let held = self.txs.held_for(&k);
        let Some(c) = self.consumers.by_id.get_mut(&k) else {
            return;
        };
        if c.sub.is_none() {
            return;
        }
        let outstanding = if c.pull.is_some() {
            c.unacked.len() + held + 1
        } else {
            c.delivered + held
        };
        let want = c
            .prefetch
            .saturating_add(u32::try_from(outstanding).unwrap_or(u32::MAX));
        if want == c.applied {
            return;
        }
        c.applied = want;
        let sub_id = c.sub_id.clone();
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = conn.set_prefetch(&sub_id, want).await
        {
            tracing::debug!(conn = %self.conn_id, error = %e, "cannot extend a consumer's prefetch");
        }
    }

    /// Pulls that waited their time out get an empty dispatch.
    pub(super) fn pull_timeouts(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .consumers
            .by_id
            .iter_mut()
            .filter_map(|(k, c)| {
                let p = c.pull.as_mut()?;
                match p.waiting {
                    Some(Some(t)) if t <= now => {
                        p.waiting = None;
                        Some(*k)
                    }
                    _ => None,
                }
            })
            .collect();
        for k in due {
            self.pull_done(k);
        }
    }

    /// Tells a pulling consumer there is nothing for it (a dispatch
    /// without a message ends its receive).
    fn pull_done(&mut self, k: Key) {
        let Some(c) = self.consumers.by_id.get(&k) else {
            return;
        };
        let dispatch = ow::MessageDispatch {
            consumer_id: Some(c.id.clone()),
            ..ow::MessageDispatch::default()
        };
        self.send(Command::MessageDispatch(dispatch));
    }

    /// `MessageAck`.
    pub(super) async fn ack(&mut self, a: ow::MessageAck) -> Result<(), Fatal> {
        let (id, required) = (a.command_id, a.response_required);
        let reply = Reply::to(id, required);
        let (Some(consumer), Some(last)) = (a.consumer_id.as_ref(), a.last_message_id.as_ref())
        else {
            return self.reply(reply);
        };
        let k = key(consumer);
        let last = u64::try_from(last.broker_sequence_id).unwrap_or(0);
        let (range, reject) = match a.ack_type {
            ack_type::DELIVERED => {
                self.consumers.delivered(&k, last);
                self.extend_prefetch(k).await;
                return self.reply(reply);
            }
            ack_type::REDELIVERED => return self.reply(reply),
            ack_type::STANDARD | ack_type::UNMATCHED | ack_type::EXPIRED => (true, false),
            ack_type::INDIVIDUAL => (false, false),
            ack_type::POISON => (true, true),
            other => {
                return self.refuse(
                    id,
                    required,
                    JMS_EXCEPTION,
                    format!("unknown acknowledgement type {other}"),
                );
            }
        };
        let tx = match &a.transaction_id {
            Some(ow::TransactionId::Local(t)) if !reject => Some(tx_name(t)),
            Some(ow::TransactionId::Xa(_)) => {
                return self.refuse(
                    id,
                    required,
                    super::error::NOT_SUPPORTED,
                    "XA transactions are not supported".into(),
                );
            }
            _ => None,
        };
        let Some(tokens) = self.consumers.take(&k, last, range) else {
            // After a failover the client may acknowledge what the broker
            // it was on sent; this broker redelivers those instead.
            if let Some(t) = &tx {
                self.txs.rollback_only(t);
            }
            tracing::debug!(conn = %self.conn_id, message = last,
                "acknowledgement of a message this consumer does not hold; ignored");
            return self.reply(reply);
        };
        if let Some(t) = tx {
            // Held here until the commit: a rollback leaves them with the
            // consumer, whose client redelivers them itself.
            self.txs.hold(&t, k, tokens);
            self.extend_prefetch(k).await;
            return self.reply(reply);
        }
        let mut works = Vec::new();
        for (_, t) in tokens {
            let request = AckRequest {
                target: AckRef::Delivery(t),
                reject,
                poison: reject,
                tx: None,
                confirm: required,
            };
            match self.conn()?.ack(request).await {
                Ok(Some(w)) => works.push(w),
                Ok(None) => {}
                Err(e) => return self.refuse_service(id, required, &e),
            }
        }
        self.after(0, reply, join(works))
    }
}
