//! The broker service and the destination actors behind it, driven in
//! memory through the protocol-neutral API: no socket, no protocol head, no
//! process. The store is the in-memory one with its real writer thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::config::BrokerConfig;
use crate::core::{Delivery, Kick};
use crate::model::{Destination, Properties, Value};
use crate::store::open::Site;
use crate::store::{MemoryStore, Store, Usage, WriterConfig};

/// A broker service over the in-memory store.
pub(crate) fn service(config: BrokerConfig) -> Arc<Service> {
    let site = Site::of(config.store.kind, &config.data_dir, &config.store.url);
    let resources = crate::resources::plan(&config, &site);
    let usage = Arc::new(Usage::default());
    let (store, _writer) = Store::spawn(
        MemoryStore::with_usage(usage.clone()),
        usage,
        WriterConfig {
            queue_depth: 64,
            limit: config.store.max_bytes,
            when_full: config.store.when_full,
            duplicates: config.duplicate_bounds(),
            // Many of these run at once: a polling writer would only burn
            // the CPU the others need.
            spin: std::time::Duration::ZERO,
            in_flight: config.store.groups_in_flight,
            group_wait: std::time::Duration::from_micros(config.store.group_wait_us),
        },
        Vec::new(),
    )
    .expect("the store writer starts");
    let core = Arc::new(BrokerCore::new(
        config,
        resources,
        store,
        "ID:test-".into(),
        0,
    ));
    let security =
        Arc::new(super::Security::new(&core.config.security).expect("the test config's security"));
    Arc::new(Service::new(core, "test".to_owned(), security))
}

/// A connected client: the service's connection and its deliveries.
struct Client {
    conn: Connection,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
}

async fn connect(service: &Arc<Service>, client_id: Option<&str>) -> Result<Client, ServiceError> {
    let (tx, deliveries) = mpsc::unbounded_channel();
    let conn = service
        .connect(ConnectRequest {
            id: service.next_connection_id().into(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            client_id: client_id.map(str::to_owned),
            login: None,
            passcode: None,
            tls_subject: None,
            deliveries: tx,
            kick: Arc::new(Kick::default()),
            temp_scope: None,
            wire: crate::service::directory::Wire::new("test", "1"),
            inflight: Arc::default(),
        })
        .await?;
    Ok(Client { conn, deliveries })
}

impl Client {
    async fn send(&mut self, dest: &Destination, body: &str, tx: Option<&str>) {
        let properties = [("n".to_owned(), Value::String(body.to_owned()))]
            .into_iter()
            .collect();
        self.send_message(std::slice::from_ref(dest), properties, body, tx)
            .await;
    }

    async fn send_message(
        &mut self,
        dests: &[Destination],
        properties: Properties,
        body: &str,
        tx: Option<&str>,
    ) {
        let sent = self
            .conn
            .send(
                NewMessage {
                    destination: dests[0].clone(),
                    also: dests[1..].to_vec(),
                    properties,
                    body: Bytes::copy_from_slice(body.as_bytes()),
                    persistent: true,
                    priority: 4,
                    expires: 0,
                },
                tx,
                true,
            )
            .await
            .expect("send accepted");
        if let Some(work) = sent.work {
            work.await.expect("send completed");
        }
    }

    async fn subscribe(&mut self, dest: &Destination, ack: AckMode, prefetch: u32) {
        let (_, work) = self
            .conn
            .subscribe(SubscribeSpec {
                prefetch: Some(prefetch),
                ..SubscribeSpec::new("s", dest.clone(), ack)
            })
            .await
            .expect("subscribed");
        if let Some(work) = work {
            work.await.expect("registered");
        }
    }

    /// The next delivery, tracked as the protocol head would.
    async fn next(&mut self) -> (String, Option<DeliveryToken>, u32) {
        let d = tokio::time::timeout(Duration::from_secs(5), self.deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("the channel is open");
        let token = match self.conn.delivering(&d).expect("subscribed") {
            Tracked::Token(t) => Some(t),
            _ => None,
        };
        let body = String::from_utf8_lossy(&d.message.body).into_owned();
        (body, token, d.deliveries)
    }

    /// Asserts that nothing is delivered while the destination has had
    /// time to act.
    async fn nothing_more(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(100), self.deliveries.recv()).await;
        assert!(got.is_err(), "expected no delivery, got {got:?}");
    }

    async fn ack(&mut self, token: DeliveryToken, reject: bool, tx: Option<&str>) {
        let t = token.0.to_string();
        let work = self
            .conn
            .ack(AckRequest {
                target: AckRef::Token(&t),
                reject,
                poison: false,
                tx,
                confirm: true,
            })
            .await
            .expect("ack accepted");
        if let Some(work) = work {
            work.await.expect("ack completed");
        }
    }
}

#[tokio::test]
async fn prefetch_bounds_what_is_in_flight_and_an_ack_makes_room() {
    let service = service(BrokerConfig::default());
    let q = Destination::queue("credit");
    let mut producer = connect(&service, None).await.unwrap();
    for i in 0..5 {
        producer.send(&q, &format!("m{i}"), None).await;
    }
    let mut consumer = connect(&service, None).await.unwrap();
    consumer.subscribe(&q, AckMode::Individual, 2).await;
    let (first, t0, _) = consumer.next().await;
    let (second, _, _) = consumer.next().await;
    assert_eq!((first.as_str(), second.as_str()), ("m0", "m1"));
    consumer.nothing_more().await;
    consumer.ack(t0.unwrap(), false, None).await;
    assert_eq!(consumer.next().await.0, "m2");
    consumer.nothing_more().await;
}

#[tokio::test]
async fn a_rejected_message_is_redelivered_with_its_count() {
    let service = service(BrokerConfig::default());
    let q = Destination::queue("redeliver");
    let mut c = connect(&service, None).await.unwrap();
    c.subscribe(&q, AckMode::Individual, 10).await;
    c.send(&q, "poison", None).await;
    let (body, token, count) = c.next().await;
    assert_eq!((body.as_str(), count), ("poison", 1));
    c.ack(token.unwrap(), true, None).await;
    let (body, token, count) = c.next().await;
    assert_eq!((body.as_str(), count), ("poison", 2));
    c.ack(token.unwrap(), false, None).await;
    c.nothing_more().await;
}

#[tokio::test]
async fn a_cumulative_ack_covers_every_earlier_delivery() {
    let service = service(BrokerConfig::default());
    let q = Destination::queue("cumulative");
    let mut c = connect(&service, None).await.unwrap();
    for i in 0..3 {
        c.send(&q, &format!("m{i}"), None).await;
    }
    c.subscribe(&q, AckMode::Cumulative, 10).await;
    let mut last = None;
    for _ in 0..3 {
        last = c.next().await.1;
    }
    c.ack(last.unwrap(), false, None).await;
    let stats = service.core.destination_stats().await;
    let s = serde_json::to_value(&stats[0]).unwrap();
    assert_eq!(
        (s["acked"].as_u64(), s["inflight"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
}

#[tokio::test]
async fn a_transaction_publishes_at_commit_and_an_abort_redelivers_its_acks() {
    let service = service(BrokerConfig::default());
    let q = Destination::queue("tx");
    let mut c = connect(&service, None).await.unwrap();
    c.subscribe(&q, AckMode::Individual, 10).await;
    c.conn.begin("t1").unwrap();
    c.send(&q, "in-tx", Some("t1")).await;
    c.nothing_more().await;
    let (work, _) = c.conn.commit("t1", true).await.unwrap();
    work.unwrap().await.unwrap();
    let (body, token, _) = c.next().await;
    assert_eq!(body, "in-tx");
    c.conn.begin("t2").unwrap();
    c.ack(token.unwrap(), false, Some("t2")).await;
    assert!(c.conn.abort("t2").await.unwrap().is_none());
    let (body, _, count) = c.next().await;
    assert_eq!(
        (body.as_str(), count),
        ("in-tx", 2),
        "redelivered after the abort"
    );
    assert!(matches!(
        c.conn.commit("t2", false).await,
        Err(ServiceError::UnknownTransaction(_))
    ));
}

#[tokio::test]
async fn one_connection_at_a_time_has_a_client_id_and_closing_frees_it() {
    let service = service(BrokerConfig::default());
    let mut first = connect(&service, Some("app")).await.unwrap();
    assert!(matches!(
        connect(&service, Some("app")).await,
        Err(ServiceError::ClientIdInUse(_))
    ));
    first.conn.close().await;
    assert!(connect(&service, Some("app")).await.is_ok());
}

#[tokio::test]
async fn a_durable_subscription_needs_a_client_id_and_a_topic() {
    let service = service(BrokerConfig::default());
    let mut anonymous = connect(&service, None).await.unwrap();
    let spec = |dest: Destination| SubscribeSpec {
        durable: Some("sub".to_owned()),
        ..SubscribeSpec::new("d", dest, AckMode::Auto)
    };
    assert!(matches!(
        anonymous
            .conn
            .subscribe(spec(Destination::topic("t")))
            .await,
        Err(ServiceError::DurableNeedsClientId)
    ));
    let mut named = connect(&service, Some("c1")).await.unwrap();
    assert!(matches!(
        named.conn.subscribe(spec(Destination::queue("q"))).await,
        Err(ServiceError::DurableNotOnTopic(_))
    ));
    assert!(
        named
            .conn
            .subscribe(spec(Destination::topic("t")))
            .await
            .is_ok()
    );
}

impl Client {
    async fn send_to(&mut self, dests: &[Destination], body: &str, tx: Option<&str>) {
        self.send_message(dests, Properties::new(), body, tx).await;
    }

    async fn subscribe_spec(&mut self, spec: SubscribeSpec) {
        let (_, work) = self.conn.subscribe(spec).await.expect("subscribed");
        if let Some(work) = work {
            work.await.expect("registered");
        }
    }

    /// The next delivery: its body and the destination it shows.
    async fn next_from(&mut self) -> (String, String) {
        let d = tokio::time::timeout(Duration::from_secs(5), self.deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("the channel is open");
        self.conn.delivering(&d);
        self.conn.written().await;
        (
            String::from_utf8_lossy(&d.message.body).into_owned(),
            d.message.destination.to_string(),
        )
    }
}

#[tokio::test]
async fn a_composite_send_in_a_transaction_commits_or_aborts_every_copy() {
    let service = service(BrokerConfig::default());
    let (a, b) = (Destination::queue("ca"), Destination::queue("cb"));
    let mut p = connect(&service, None).await.unwrap();
    p.conn.begin("t1").unwrap();
    p.send_to(&[a.clone(), b.clone()], "dropped", Some("t1"))
        .await;
    p.conn.abort("t1").await.unwrap();
    p.conn.begin("t2").unwrap();
    p.send_to(&[a.clone(), b.clone()], "kept", Some("t2")).await;
    let (work, _) = p.conn.commit("t2", true).await.unwrap();
    work.unwrap().await.unwrap();
    let mut c = connect(&service, None).await.unwrap();
    c.subscribe_spec(SubscribeSpec::new("both", a.clone(), AckMode::Auto))
        .await;
    let mut both = connect(&service, None).await.unwrap();
    both.subscribe_spec(SubscribeSpec {
        destinations: vec![b.clone()],
        ..SubscribeSpec::new("b", b.clone(), AckMode::Auto)
    })
    .await;
    assert_eq!(c.next_from().await, ("kept".into(), "/queue/ca".into()));
    assert_eq!(both.next_from().await, ("kept".into(), "/queue/cb".into()));
    c.nothing_more().await;
    both.nothing_more().await;
}

#[tokio::test]
async fn a_wildcard_over_queues_takes_from_queues_made_after_it() {
    let service = service(BrokerConfig::default());
    let mut c = connect(&service, None).await.unwrap();
    c.subscribe_spec(SubscribeSpec::new(
        "w",
        Destination::queue("orders.>"),
        AckMode::Auto,
    ))
    .await;
    let mut p = connect(&service, None).await.unwrap();
    p.send(&Destination::queue("orders"), "0", None).await;
    p.send(&Destination::queue("orders.eu.fr"), "1", None).await;
    p.send(&Destination::queue("other"), "x", None).await;
    let mut got = vec![c.next_from().await, c.next_from().await];
    got.sort();
    assert_eq!(
        got,
        vec![
            ("0".into(), "/queue/orders".into()),
            ("1".into(), "/queue/orders.eu.fr".into())
        ]
    );
    c.nothing_more().await;
    // Once it is gone, new queues no longer get it.
    c.conn
        .unsubscribe(Unsubscribe {
            id: Some("w"),
            durable: None,
        })
        .await
        .unwrap();
    p.send(&Destination::queue("orders.us"), "2", None).await;
    c.nothing_more().await;
}

#[tokio::test]
async fn a_browser_takes_nothing() {
    let service = service(BrokerConfig::default());
    let q = Destination::queue("browsed");
    let mut p = connect(&service, None).await.unwrap();
    for i in 0..3 {
        p.send(&q, &format!("m{i}"), None).await;
    }
    let mut b = connect(&service, None).await.unwrap();
    b.subscribe_spec(SubscribeSpec {
        browse: true,
        ..SubscribeSpec::new("b", q.clone(), AckMode::Individual)
    })
    .await;
    for i in 0..3 {
        assert_eq!(b.next_from().await.0, format!("m{i}"));
    }
    let end = b.deliveries.recv().await.unwrap();
    assert_eq!(end.note, crate::core::Note::EndOfBrowse);
    let mut c = connect(&service, None).await.unwrap();
    c.subscribe(&q, AckMode::Auto, 10).await;
    for i in 0..3 {
        assert_eq!(c.next().await.0, format!("m{i}"));
    }
}

#[tokio::test]
async fn a_virtual_topic_feeds_each_consumer_queue_made_before_the_send() {
    let service = service(BrokerConfig::default());
    let topic = Destination::topic("VirtualTopic.Orders");
    let qa = Destination::queue("Consumer.A.VirtualTopic.Orders");
    let qb = Destination::queue("Consumer.B.VirtualTopic.Orders");
    let mut p = connect(&service, None).await.unwrap();
    p.send(&topic, "before", None).await;
    let mut a = connect(&service, None).await.unwrap();
    a.subscribe(&qa, AckMode::Auto, 10).await;
    p.send(&topic, "one", None).await;
    let mut b = connect(&service, None).await.unwrap();
    b.subscribe(&qb, AckMode::Auto, 10).await;
    p.send(&topic, "two", None).await;
    assert_eq!(a.next_from().await, ("one".into(), qa.to_string()));
    assert_eq!(a.next_from().await, ("two".into(), qa.to_string()));
    assert_eq!(b.next_from().await, ("two".into(), qb.to_string()));
    a.nothing_more().await;
    b.nothing_more().await;
}

/// A queue's statistics count what senders were told it has: also what
/// still waits in its publish channel, since a RECEIPT may come before the
/// queue's actor took the message (and the actor serves control requests
/// first). On this single-threaded runtime the actor cannot run between
/// the publishes and the request, so the request meets them all waiting.
#[tokio::test]
async fn queue_statistics_count_messages_waiting_in_the_publish_channel() {
    let s = service(BrokerConfig::default());
    let q = Destination::queue("q");
    let h = s.core.destination(&q).expect("the queue");
    for seq in 1..=3 {
        let m = crate::model::test_message(seq, 4);
        h.publish(m, false, crate::core::Envelope::default())
            .await
            .expect("published");
    }
    let stats = s.core.destination_stats().await;
    let q = stats
        .iter()
        .find(|d| d.destination == "/queue/q")
        .expect("the queue's statistics");
    assert_eq!(q.dispatch.enqueued, 3, "{stats:?}");
    assert_eq!(q.dispatch.ready, 3, "{stats:?}");
}

/// A durable subscription made again (another selector) or removed while
/// recovery's messages are still being handed to it waits for the last of
/// them: done earlier, those still to come would land in the new
/// subscription, or bring the removed one back, and stay stored. The
/// subscriptions' list waits for all of them.
#[tokio::test]
async fn a_durable_subscription_changed_while_its_messages_are_restored_waits_for_them_all() {
    use crate::core::{ConsumerReg, Control, DurableName};
    use crate::store::Record;
    let s = service(BrokerConfig::default());
    let topic = Destination::topic("restored");
    let h = s.core.destination(&topic).expect("the topic");
    let red = s.stored_selector("color = 'red'").expect("a selector");
    let name = |n: &str| DurableName {
        client_id: "c".into(),
        name: n.into(),
    };
    let (again, gone) = (name("again"), name("gone"));
    // Stored, as recovery found them: 3 for each subscription, of which
    // each gets one before the changes and two after.
    let mut found = Vec::new();
    for (d, first) in [(&again, 1), (&gone, 11)] {
        for seq in first..first + 3 {
            let message = crate::model::test_message(seq, 4);
            let key = d.store_key();
            let add = Record::Add {
                key: key.clone(),
                message: message.clone(),
                dedup: None,
            };
            let stored = s.core.store.submit(vec![add]).await.expect("submitted");
            stored.await.expect("stored");
            found.push(found_by_recovery(key, message));
        }
    }
    assert!(s.core.store.used_bytes() > 0);
    let restore = |d: &DurableName, seqs: std::ops::Range<u64>| Control::Restore {
        durable: Some(d.clone()),
        messages: found
            .iter()
            .filter(|m| seqs.contains(&m.seq))
            .cloned()
            .collect(),
    };
    for d in [&again, &gone] {
        begin_restoring(&h, d, red.clone()).await;
    }
    h.control(restore(&again, 1..2)).await.unwrap();
    h.control(restore(&gone, 11..12)).await.unwrap();

    let (tx, mut deliveries) = mpsc::unbounded_channel();
    let mut consumer = ConsumerReg::plain(1, 10, tx);
    consumer.selector = s.stored_selector("color = 'blue'").expect("a selector");
    let (done, mut subscribed) = tokio::sync::oneshot::channel();
    h.control(Control::SubscribeDurable {
        name: again.clone(),
        consumer,
        done,
    })
    .await
    .unwrap();
    let (done, mut removed) = tokio::sync::oneshot::channel();
    h.control(Control::RemoveDurable {
        name: gone.clone(),
        done,
    })
    .await
    .unwrap();
    h.control(restore(&again, 2..4)).await.unwrap();
    h.control(restore(&gone, 12..14)).await.unwrap();
    // The list would show part of what recovery found: it waits too.
    let (reply, mut listed) = tokio::sync::oneshot::channel();
    h.control(Control::Durables { reply }).await.unwrap();
    // Every control so far has been taken once a plain subscriber's
    // registration is answered: none of the three is done yet.
    let (plain_tx, _plain) = mpsc::unbounded_channel();
    let (done, registered) = tokio::sync::oneshot::channel();
    h.control(Control::Subscribe {
        consumer: ConsumerReg::plain(2, 10, plain_tx),
        done,
    })
    .await
    .unwrap();
    registered.await.unwrap();
    assert!(subscribed.try_recv().is_err(), "made again too soon");
    assert!(removed.try_recv().is_err(), "removed too soon");
    assert!(listed.try_recv().is_err(), "listed before all were in");

    for d in [&again, &gone] {
        h.control(Control::RestoreEnd {
            durable: Some(d.clone()),
        })
        .await
        .unwrap();
    }
    subscribed.await.unwrap().expect("made again");
    removed.await.unwrap().expect("removed");
    // Answered after the changes that came before it.
    let views = listed.await.unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].name, "again");
    assert_eq!(views[0].selector.as_deref(), Some("color = 'blue'"));
    assert_eq!(views[0].pending, 0, "{views:?}");
    assert!(
        deliveries.try_recv().is_err(),
        "delivered a message it no longer selects"
    );
    // None of the six is left in the store (removals are written lazily).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.core.store.used_bytes() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "recovered messages left stored: {} bytes",
            s.core.store.used_bytes()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A consumer that goes while its durable subscription waits to be made
/// again (recovery's messages still coming in) is not attached once they
/// are in: the subscription stays as it was, free for the next consumer.
/// Gone by an UNSUBSCRIBE of it, or by its subscriber giving up the wait.
#[tokio::test]
async fn a_consumer_gone_while_its_durable_subscription_waits_is_not_attached() {
    consumer_gone_while_waiting(true).await;
}

#[tokio::test]
async fn a_subscriber_that_stops_waiting_for_a_durable_subscription_gets_no_consumer_attached() {
    consumer_gone_while_waiting(false).await;
}

async fn consumer_gone_while_waiting(unsubscribe: bool) {
    use crate::core::{ConsumerId, ConsumerReg, Control, DurableName};
    let s = service(BrokerConfig::default());
    let h = s
        .core
        .destination(&Destination::topic("left"))
        .expect("the topic");
    let name = DurableName {
        client_id: "c".into(),
        name: "left".into(),
    };
    let restored =
        |seq: u64| found_by_recovery(name.store_key(), crate::model::test_message(seq, 4));
    let red = s.stored_selector("color = 'red'").expect("a selector");
    begin_restoring(&h, &name, red).await;
    h.control(Control::Restore {
        durable: Some(name.clone()),
        messages: vec![restored(1), restored(2)],
    })
    .await
    .unwrap();
    let (tx, _deliveries) = mpsc::unbounded_channel();
    let mut consumer = ConsumerReg::plain(7, 10, tx);
    consumer.selector = s.stored_selector("color = 'blue'").expect("a selector");
    let (done, subscribed) = tokio::sync::oneshot::channel();
    h.control(Control::SubscribeDurable {
        name: name.clone(),
        consumer,
        done,
    })
    .await
    .unwrap();
    let mut subscribed = Some(subscribed);
    if unsubscribe {
        h.control(Control::Unsubscribe {
            consumer: ConsumerId(7),
            done: None,
        })
        .await
        .unwrap();
    } else {
        subscribed = None;
    }
    h.control(Control::RestoreEnd {
        durable: Some(name.clone()),
    })
    .await
    .unwrap();
    let (reply, listed) = tokio::sync::oneshot::channel();
    h.control(Control::Durables { reply }).await.unwrap();
    let views = listed.await.unwrap();
    if let Some(subscribed) = subscribed {
        assert!(subscribed.await.is_err(), "told it was not made");
    }
    assert_eq!(views.len(), 1, "{views:?}");
    assert!(!views[0].active, "attached for a consumer gone: {views:?}");
    assert_eq!(views[0].selector.as_deref(), Some("color = 'red'"));
    assert_eq!(views[0].pending, 2, "{views:?}");
}

/// A message as recovery hands it over.
fn found_by_recovery(
    key: crate::store::StoreKey,
    message: Arc<crate::model::Message>,
) -> crate::store::StoredMessage {
    crate::store::StoredMessage {
        key,
        seq: message.seq,
        priority: message.priority,
        expires: 0,
        weight: message.weight() as u32,
        deliveries: 0,
        not_before: 0,
        message: Some(message),
        schedule: None,
    }
}

/// Recovery found durable subscription `name` with `selector`, and its
/// messages are coming.
async fn begin_restoring(
    h: &crate::core::DestHandle,
    name: &crate::core::DurableName,
    selector: Option<Arc<dyn crate::core::Select>>,
) {
    use crate::core::Control;
    h.control(Control::RestoreSubscription {
        name: name.clone(),
        selector,
    })
    .await
    .unwrap();
    h.control(Control::RestoreBegin {
        durable: Some(name.clone()),
    })
    .await
    .unwrap();
}
