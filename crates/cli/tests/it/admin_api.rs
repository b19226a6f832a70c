//! The management API (docs/OPERATIONS.md): destinations listed, browsed,
//! purged, moved, copied, retried from the dead-letter queue and deleted;
//! connections listed and closed; durable subscriptions listed and
//! removed; a slave refusing with the master's name; moves that survive
//! kill -9; the OpenAPI description matching the router.

use std::net::SocketAddr;
use std::time::Duration;

use halyard_testkit::eventually;
use halyard_testkit::http::{HttpReply, http_json, http_request};
use halyard_testkit::stomp::{Stomp, body};
use serde_json::Value;

use crate::support::BrokerProcess;
use crate::support::cluster::Cluster;
use crate::support::inproc::TestBroker;

async fn get(http: SocketAddr, path: &str) -> HttpReply {
    http_request(http, "GET", path, None).await
}

async fn get_json(http: SocketAddr, path: &str) -> Value {
    let r = get(http, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
}

async fn post(http: SocketAddr, path: &str, json: &str) -> (u16, Value) {
    let r = http_json(http, "POST", path, None, json).await;
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

async fn depth(http: SocketAddr, queue: &str) -> u64 {
    let r = get(http, &format!("/api/destinations/queue/{queue}")).await;
    if r.status == 404 {
        return 0;
    }
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["depth"].as_u64().unwrap()
}

async fn send_n(stomp: SocketAddr, dest: &str, n: usize, headers: &[(&str, &str)]) {
    let mut c = Stomp::connect(stomp).await;
    for i in 0..n {
        let mut h = vec![("n", i.to_string()), ("persistent", "true".to_owned())];
        h.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.send_msg(dest, &format!("body-{i}"), &h).await;
    }
    c.disconnect().await;
}

#[tokio::test]
async fn destinations_are_listed_browsed_without_consuming_and_purged() {
    let b = TestBroker::start("").await;
    send_n(b.stomp, "/queue/ops.a", 5, &[]).await;
    send_n(b.stomp, "/queue/ops.b", 1, &[]).await;

    let r = get(b.http, "/api/destinations?kind=queue&q=ops.&limit=1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-total-count"), Some("2"), "{}", r.head);
    let page: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["destination"], "/queue/ops.a");
    assert_eq!(page[0]["kind"], "queue");
    assert_eq!(page[0]["depth"], 5);
    assert!(page[0]["oldest_age_ms"].is_u64(), "{page}");

    // A page of the queue, bodies cut short on request; nothing consumed.
    let v = get_json(
        b.http,
        "/api/destinations/queue/ops.a/messages?offset=1&limit=2&body=3",
    )
    .await;
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{v}");
    assert_eq!(msgs[0]["headers"]["n"], "1");
    assert_eq!(msgs[1]["headers"]["n"], "2");
    assert_eq!(msgs[0]["body"], "bod");
    assert_eq!(msgs[0]["truncated"], true);
    assert_eq!(msgs[0]["body_bytes"], 6);
    assert_eq!(msgs[0]["persistent"], true);
    assert_eq!(depth(b.http, "ops.a").await, 5);

    // One message by id, whole.
    let id = msgs[1]["id"].as_str().unwrap().to_owned();
    let one = get_json(
        b.http,
        &format!("/api/destinations/queue/ops.a/messages/{id}"),
    )
    .await;
    assert_eq!(one["body"], "body-2");
    assert_eq!(one["truncated"], false);
    let r = get(b.http, "/api/destinations/queue/ops.a/messages/ID:nope").await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Browsing with a selector.
    let v = get_json(
        b.http,
        "/api/destinations/queue/ops.a/messages?selector=n%20%3D%20%274%27",
    )
    .await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v}");

    let (status, v) = post(b.http, "/api/destinations/queue/ops.a/purge", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["purged"], 5);
    assert_eq!(depth(b.http, "ops.a").await, 0);
    // A consumer finds nothing.
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/ops.a", "auto", &[]).await;
    c.expect_silence(Duration::from_millis(300)).await;

    // Unknown queue, bad kind, bad selector: clear errors.
    assert_eq!(
        post(b.http, "/api/destinations/queue/none.such/purge", "")
            .await
            .0,
        404
    );
    assert_eq!(get(b.http, "/api/destinations/box/x").await.status, 400);
    let r = get(
        b.http,
        "/api/destinations/queue/ops.b/messages?selector=%3D%3D",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("selector"), "{}", r.body);
}

#[tokio::test]
async fn messages_move_by_selector_and_copy_and_the_originals_go() {
    let b = TestBroker::start("").await;
    let mut p = Stomp::connect(b.stomp).await;
    for (i, color) in ["red", "blue", "red", "blue", "red", "green"]
        .iter()
        .enumerate()
    {
        p.send_msg(
            "/queue/paint",
            &format!("m{i}"),
            &[("color", color), ("persistent", "true")],
        )
        .await;
    }
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/paint/move",
        r#"{"to":"/queue/paint.red","selector":"color = 'red'"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["moved"], 3);
    assert_eq!(depth(b.http, "paint").await, 3);
    assert_eq!(depth(b.http, "paint.red").await, 3);

    // Copy: the originals stay. ActiveMQ's spelling of the target works.
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/paint.red/move",
        r#"{"to":"queue://paint.copy","copy":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["copied"], 3);
    assert_eq!(depth(b.http, "paint.red").await, 3);
    assert_eq!(depth(b.http, "paint.copy").await, 3);

    // By id, then everything that is left.
    let v = get_json(b.http, "/api/destinations/queue/paint/messages").await;
    let id = v["messages"][0]["id"].as_str().unwrap().to_owned();
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/paint/move",
        &format!(r#"{{"to":"/queue/paint.one","ids":["{id}"]}}"#),
    )
    .await;
    assert_eq!((status, v["moved"].as_u64()), (200, Some(1)), "{v}");
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/paint/move",
        r#"{"to":"/queue/paint.rest"}"#,
    )
    .await;
    assert_eq!((status, v["moved"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(depth(b.http, "paint").await, 0);

    // The moved messages are delivered, with their properties.
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/paint.red", "client-individual", &[])
        .await;
    for _ in 0..3 {
        let m = c.recv_message().await;
        assert_eq!(m.headers.get("color"), Some("red"), "{m:?}");
        c.ack(&m).await;
    }

    // Bad requests.
    let (status, v) = post(b.http, "/api/destinations/queue/paint.copy/move", "{}").await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/paint.copy/move",
        r#"{"to":"/queue/paint.copy"}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/paint.copy/move",
        r#"{"to":"orders"}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("/queue/"), "{v}");
    // Not JSON, unknown fields, a bad body size, a connection id that is no
    // number: 400 with the reason, and nothing moved.
    for body in ["{not json", r#"{"to":"/queue/x","bogus":1}"#] {
        let (status, v) = post(b.http, "/api/destinations/queue/paint.copy/move", body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
    }
    assert_eq!(depth(b.http, "paint.copy").await, 3);
    let r = get(
        b.http,
        "/api/destinations/queue/paint.copy/messages?body=lots",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http_request(b.http, "DELETE", "/api/connections/abc", None).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

/// A dead letter retried goes back to its queue and is delivered, though
/// the queue saw its duplicate-detection id when it was first sent.
#[tokio::test]
async fn dlq_retry_puts_dead_letters_back_despite_their_duplicate_id() {
    let b = TestBroker::start("[destinations]\nmax-redeliveries = 0\n").await;
    let mut c = Stomp::connect_1_2(b.stomp).await;
    c.send_msg(
        "/queue/jobs",
        "job-1",
        &[("_AMQ_DUPL_ID", "producer-1:1"), ("persistent", "true")],
    )
    .await;
    c.subscribe("s", "/queue/jobs", "client-individual", &[])
        .await;
    let m = c.recv_message().await;
    c.nack(&m).await;
    eventually(Duration::from_secs(10), "the dead letter", || async {
        (depth(b.http, "DLQ.jobs").await == 1).then_some(())
    })
    .await;

    let v = get_json(b.http, "/api/destinations/queue/DLQ.jobs/messages").await;
    assert_eq!(
        v["messages"][0]["headers"]["original-destination"],
        "/queue/jobs"
    );

    let (status, v) = post(b.http, "/api/destinations/queue/DLQ.jobs/retry", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["retried"], 1, "{v}");
    assert_eq!(depth(b.http, "DLQ.jobs").await, 0);
    let m = c.recv_message().await;
    assert_eq!(body(&m), "job-1");
    assert_eq!(m.headers.get("original-destination"), None, "{m:?}");
    c.ack(&m).await;

    // A retry names no target.
    let (status, _) = post(
        b.http,
        "/api/destinations/queue/DLQ.jobs/retry",
        r#"{"to":"/queue/x"}"#,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn connections_are_listed_with_their_subscriptions_and_closed() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect_with(b.stomp, &[("client-id", "watched-app")]).await;
    c.subscribe("sub-1", "/queue/watched", "client", &[]).await;
    send_n(b.stomp, "/queue/watched", 2, &[]).await;
    let _ = c.recv_message().await;
    let _ = c.recv_message().await;

    let list = eventually(Duration::from_secs(5), "the connection listed", || async {
        let v = get_json(b.http, "/api/connections").await;
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == "watched-app" && c["unacked"] == 2)
            .cloned()
    })
    .await;
    assert_eq!(list["protocol"], "stomp");
    assert_eq!(list["inflight"], 0, "{list}");
    assert!(
        list["version"].as_str().unwrap().starts_with("1."),
        "{list}"
    );
    assert_eq!(list["subscriptions"][0]["destination"], "/queue/watched");
    assert_eq!(list["subscriptions"][0]["id"], "sub-1");
    assert!(list["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    let id = list["id"].as_u64().unwrap();
    let r = http_request(b.http, "DELETE", &format!("/api/connections/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    c.expect_closed().await;
    // Its unacknowledged messages are back in the queue.
    eventually(Duration::from_secs(5), "messages back", || async {
        (depth(b.http, "watched").await == 2).then_some(())
    })
    .await;
    let r = http_request(b.http, "DELETE", "/api/connections/999999", None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn durable_subscriptions_are_listed_and_removed() {
    let b = TestBroker::start("").await;
    let mut c = Stomp::connect_with(b.stomp, &[("client-id", "news-reader")]).await;
    c.subscribe(
        "d",
        "/topic/news",
        "auto",
        &[("activemq.subscriptionName", "daily")],
    )
    .await;
    let v = get_json(b.http, "/api/subscriptions").await;
    assert_eq!(v[0]["client_id"], "news-reader");
    assert_eq!(v[0]["name"], "daily");
    assert_eq!(v[0]["topic"], "/topic/news");
    assert_eq!(v[0]["active"], true);
    // Not while its consumer is attached.
    let r = http_request(
        b.http,
        "DELETE",
        "/api/subscriptions/news-reader/daily",
        None,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    c.disconnect().await;
    send_n(b.stomp, "/topic/news", 2, &[]).await;
    let v = eventually(Duration::from_secs(5), "pending 2", || async {
        let v = get_json(b.http, "/api/subscriptions").await;
        (v[0]["pending"] == 2 && v[0]["active"] == false).then_some(v)
    })
    .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    // A topic with a durable subscription is not deleted.
    let r = http_request(b.http, "DELETE", "/api/destinations/topic/news", None).await;
    assert_eq!(r.status, 409, "{}", r.body);

    let r = http_request(
        b.http,
        "DELETE",
        "/api/subscriptions/news-reader/daily",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = get_json(b.http, "/api/subscriptions").await;
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    let r = http_request(
        b.http,
        "DELETE",
        "/api/subscriptions/news-reader/daily",
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn a_deleted_queue_loses_its_messages_and_its_consumers() {
    let b = TestBroker::start("").await;
    send_n(b.stomp, "/queue/doomed", 3, &[]).await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe(
        "s",
        "/queue/doomed",
        "client",
        &[("activemq.prefetchSize", "1")],
    )
    .await;
    let _ = c.recv_message().await;
    let r = http_request(b.http, "DELETE", "/api/destinations/queue/doomed", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["messages"], 3, "{v}");
    c.expect_closed().await;
    assert_eq!(
        get(b.http, "/api/destinations/queue/doomed").await.status,
        404
    );
}

/// Moves and purges are in the store: after kill -9 the messages are where
/// they were moved to, once, and purged ones stay gone.
#[tokio::test]
async fn moves_and_purges_survive_kill_9() {
    let mut b = BrokerProcess::start("").await;
    send_n(b.stomp, "/queue/src", 40, &[]).await;
    send_n(b.stomp, "/queue/trash", 10, &[]).await;
    let (status, v) = post(
        b.http,
        "/api/destinations/queue/src/move",
        r#"{"to":"/queue/dst"}"#,
    )
    .await;
    assert_eq!((status, v["moved"].as_u64()), (200, Some(40)), "{v}");
    let (status, v) = post(b.http, "/api/destinations/queue/trash/purge", "").await;
    assert_eq!((status, v["purged"].as_u64()), (200, Some(10)), "{v}");
    b.kill();
    b.restart().await;
    assert_eq!(depth(b.http, "src").await, 0);
    assert_eq!(depth(b.http, "trash").await, 0);
    assert_eq!(depth(b.http, "dst").await, 40);
    let v = get_json(b.http, "/api/destinations/queue/dst/messages?limit=500").await;
    let mut ns: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["headers"]["n"].as_str().unwrap().parse().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..40).collect::<Vec<u64>>());
}

/// A slave serves status but refuses the master's work with 503, naming
/// who holds the lock.
#[tokio::test]
async fn a_slave_refuses_operations_with_503_and_names_the_master() {
    let mut c = Cluster::new("");
    let a = c.master("a").await;
    let s = c.slave("b").await;
    let http = c.nodes[s].http;
    for (method, path) in [
        ("GET", "/api/destinations"),
        ("GET", "/api/connections"),
        ("POST", "/api/destinations/queue/x/purge"),
    ] {
        let r = http_request(http, method, path, None).await;
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["role"], "slave", "{v}");
        assert!(v["master"].as_str().unwrap().contains('a'), "{v}");
    }
    assert_eq!(get(http, "/api/broker").await.status, 200);
    assert_eq!(get(c.nodes[a].http, "/api/connections").await.status, 200);
}

/// Every path the OpenAPI description names is routed, and every route is
/// described.
#[tokio::test]
async fn the_openapi_description_matches_the_router() {
    let b = TestBroker::start("").await;
    let doc = get_json(b.http, "/api/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        let concrete = path
            .replace("{kind}", "queue")
            .replace("{name}", "x")
            .replace("{id}", "1")
            .replace("{client_id}", "c");
        for method in ops.as_object().unwrap().keys() {
            let r = http_request(b.http, &method.to_uppercase(), &concrete, None).await;
            // Unrouted: axum's empty 404 or 405. A routed 404 says why.
            assert!(
                r.status != 405 && !(r.status == 404 && r.body.is_empty()),
                "{method} {path} is described but not routed: {} {}",
                r.status,
                r.body
            );
        }
    }
    for route in [
        "/api/status",
        "/api/broker",
        "/api/destinations",
        "/api/destinations/{kind}/{name}",
        "/api/destinations/{kind}/{name}/messages",
        "/api/destinations/{kind}/{name}/messages/{id}",
        "/api/destinations/{kind}/{name}/purge",
        "/api/destinations/{kind}/{name}/move",
        "/api/destinations/{kind}/{name}/retry",
        "/api/connections",
        "/api/connections/{id}",
        "/api/subscriptions",
        "/api/subscriptions/{client_id}/{name}",
        "/api/scheduled",
        "/api/openapi.json",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(route), "{route} is not described");
    }
}

/// A purge takes what the queue holds when it starts: producers that keep
/// sending do not keep it going.
#[tokio::test]
async fn a_purge_of_a_busy_queue_ends() {
    let b = TestBroker::start("").await;
    send_n(b.stomp, "/queue/busy", 2000, &[]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for _ in 0..4 {
        let (addr, stop) = (b.stomp, stop.clone());
        producers.push(tokio::spawn(async move {
            let mut c = Stomp::connect(addr).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send_msg("/queue/busy", "more", &[]).await;
            }
        }));
    }
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(20),
        post(b.http, "/api/destinations/queue/busy/purge", ""),
    )
    .await
    .expect("the purge of a busy queue did not end");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    assert_eq!(status, 200, "{v}");
    assert!(v["purged"].as_u64().unwrap() >= 2000, "{v}");
}
