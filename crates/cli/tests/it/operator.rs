//! The operator's CLI over the admin API (issue #18, part 5): `dstat`,
//! `status` for a pair, `browse`, `purge`, `move`, `dlq retry`,
//! `connections`, completions and man pages, and the documented exit codes
//! (0 ok, 1 error, 2 usage, 3 not master, 4 not found).
//!
//! against the API contract (browse, purge, move, retry, connections) and
//! pass once the broker serves it; run them with `--run-ignored all`.

use std::time::Duration;

use serde_json::Value;

use crate::support::cluster::{Cluster, ROLE_WAIT};
use crate::support::{BrokerProcess, run_cli};
use halyard_testkit::eventually;
use halyard_testkit::free_port;
use halyard_testkit::stomp::{Stomp, body};

/// Sends `n` persistent messages `m0..` to `dest`, each confirmed.
async fn fill(b: &BrokerProcess, dest: &str, n: usize) {
    let mut c = Stomp::connect(b.stomp).await;
    for i in 0..n {
        c.send_msg(dest, &format!("m{i}"), &[("persistent", "true")])
            .await;
    }
    c.disconnect().await;
}

/// Runs the CLI against `b`'s admin API; the address as an http:// URL so
/// that both spellings are covered across the tests.
fn cli(b: &BrokerProcess, args: &[&str]) -> (i32, String, String) {
    let url = format!("http://{}", b.http);
    let mut all = args.to_vec();
    all.extend(["--http", url.as_str()]);
    run_cli(&all, None)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn completions_and_man_pages_are_generated_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_cli(&["completions", shell], None);
        assert_eq!(code, 0, "{shell}: {err}");
        for sub in ["dstat", "browse", "purge", "connections", "status"] {
            assert!(out.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let (code, _, err) = run_cli(&["completions", "tcsh"], None);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = run_cli(&["man"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH halyard 1"), "{out}");
    assert!(out.contains("dstat"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let (code, _, err) = run_cli(&["man", "--out", out_dir.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    for page in [
        "halyard.1",
        "halyard-dstat.1",
        "halyard-dlq-retry.1",
        "halyard-status.1",
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn bad_admin_addresses_and_destinations_are_usage_errors() {
    let (code, _, err) = run_cli(&["dstat", "--http", "ftp://h:1"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid admin address 'ftp://h:1'"), "{err}");
    let (code, _, err) = run_cli(&["browse", "-d", "/topic/t", "--http", "127.0.0.1:1"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("works on queues"), "{err}");
    // Unreachable: a plain error, said once.
    let port = free_port();
    let (code, _, err) = run_cli(&["dstat", "--http", &format!("127.0.0.1:{port}")], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn dstat_shows_destinations_as_a_table_and_as_json() {
    let b = BrokerProcess::start("").await;
    fill(&b, "/queue/orders", 3).await;
    fill(&b, "/topic/prices", 1).await;

    let (code, out, err) = cli(&b, &["dstat"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let head = lines.next().unwrap();
    for col in [
        "Name",
        "Queue Size",
        "Producer #",
        "Consumer #",
        "Enqueue #",
        "Dequeue #",
        "Memory",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let orders = out
        .lines()
        .find(|l| l.starts_with("/queue/orders"))
        .unwrap();
    let cells: Vec<&str> = orders.split_whitespace().collect();
    assert_eq!(cells[1], "3", "queue size: {out}");
    // Columns line up: every row is as wide as the header or narrower,
    // and the size column ends where its heading does.
    let end = head.find("Queue Size").unwrap() + "Queue Size".len();
    assert_eq!(&orders[end - 1..end], "3", "{out}");
    assert!(out.contains("/topic/prices"), "{out}");

    let (code, out, err) = cli(&b, &["dstat", "--json", "--kind", "queue"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 1, "{v}");
    assert_eq!(all[0]["destination"], "/queue/orders");
    assert_eq!(all[0]["enqueued"], 3);

    let (code, out, _) = cli(&b, &["dstat", "--filter", "pri"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("/topic/prices") && !out.contains("/queue/orders"),
        "{out}"
    );
    let (code, out, _) = cli(&b, &["dstat", "--filter", "nothing-like-it"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "no destinations");

    // --watch: rates between two samples, then stop after --count.
    let (code, out, err) = cli(&b, &["dstat", "--watch", "0.2", "--count", "1", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(out.lines().next().unwrap());
    let orders = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "/queue/orders")
        .unwrap();
    assert_eq!(orders["enqueue_rate"], 0.0, "{orders}");
    let (code, out, err) = cli(&b, &["dstat", "--watch", "0.2", "--count", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Enq/s") && out.contains("Deq/s"), "{out}");
}

#[tokio::test]
async fn status_of_a_pair_names_its_one_master() {
    let mut c = Cluster::new("[journal]\nsegment-bytes = 1048576\n");
    let m = c.master("a").await;
    let s = c.slave("b").await;
    let (ma, sb) = (c.nodes[m].http.to_string(), c.nodes[s].http.to_string());
    let sb_url = format!("http://{sb}");

    let (code, out, err) = run_cli(&["status", "--http", &ma, "--http", &sb_url], None);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&ma) && lines[0].contains("master") && lines[0].contains("'a'"),
        "{out}"
    );
    assert!(lines[0].contains("epoch 1"), "{out}");
    assert!(
        lines[1].starts_with(&sb_url)
            && lines[1].contains("slave")
            && lines[1].contains("waiting for 'a'"),
        "{out}"
    );

    let (code, out, err) = run_cli(&["status", "--json", "--http", &ma, "--http", &sb], None);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v[0]["address"], ma.as_str());
    assert_eq!(v[0]["status"]["role"], "master");
    assert_eq!(v[1]["status"]["role"], "slave");

    // A slave refuses what only a master knows: exit code 3.
    let (code, _, err) = run_cli(&["dstat", "--http", &sb], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not master"), "{err}");

    // The master gone: the pair has no master until the slave takes over;
    // then exactly one again, with a new epoch.
    c.nodes[m].kill();
    let out = eventually(ROLE_WAIT, "the slave to take over", || {
        let (sb, ma) = (sb.clone(), ma.clone());
        async move {
            let (code, out, _) = run_cli(&["status", "--http", &ma, "--http", &sb], None);
            (code == 0).then_some(out)
        }
    })
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("unreachable"), "{out}");
    assert!(
        lines[1].contains("master") && lines[1].contains("epoch 2"),
        "{out}"
    );
    assert!(lines[1].contains("last takeover"), "{out}");
}

#[test]
fn status_without_any_master_exits_3() {
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (code, out, err) = run_cli(&["status", "--http", &a, "--http", &b], None);
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("unreachable")).count(),
        2,
        "{out}"
    );
    assert!(err.contains("no master among 2 broker(s)"), "{err}");
}

#[tokio::test]
async fn purge_asks_for_yes_without_a_terminal() {
    let b = BrokerProcess::start("").await;
    fill(&b, "/queue/p", 1).await;
    let (code, _, err) = cli(&b, &["purge", "-d", "/queue/p"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    // Nothing was purged.
    assert_eq!(b.dest_stats("/queue/p").await.unwrap()["ready"], 1);
}

// ------------------------------------------------------------------
// Against the #18 admin API contract (docs/OPERATIONS.md): these pass once
// the broker serves browse, purge, move, retry and connections.

#[tokio::test]
async fn browse_shows_messages_without_consuming_them() {
    let b = BrokerProcess::start("").await;
    fill(&b, "/queue/b", 3).await;
    let (code, out, err) = cli(&b, &["browse", "-d", "/queue/b", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("m0") && out.contains("m1") && !out.contains("m2"),
        "{out}"
    );
    assert!(out.contains("destination: /queue/b"), "{out}");
    let (code, out, err) = cli(
        &b,
        &["browse", "-d", "queue://b", "--offset", "2", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["messages"][0]["body"], "m2", "{v}");
    let (code, out, _) = cli(
        &b,
        &["browse", "-d", "/queue/b", "--body-limit", "1", "--json"],
    );
    assert_eq!(code, 0);
    assert_eq!(json(&out)["messages"][0]["truncated"], true);
    // Still all there.
    assert_eq!(b.dest_stats("/queue/b").await.unwrap()["ready"], 3);
    let (code, _, err) = cli(&b, &["browse", "-d", "/queue/never-made"]);
    assert_eq!(code, 4, "{err}");
}

#[tokio::test]
async fn purge_with_yes_empties_a_queue() {
    let b = BrokerProcess::start("").await;
    fill(&b, "/queue/p", 4).await;
    let (code, out, err) = cli(&b, &["purge", "-d", "/queue/p", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "purged 4 message(s) from /queue/p");
    assert_eq!(b.dest_stats("/queue/p").await.unwrap()["ready"], 0);
    let (code, out, _) = cli(&b, &["purge", "-d", "/queue/p", "--yes", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["purged"], 0);
}

#[tokio::test]
async fn move_and_copy_between_queues() {
    let b = BrokerProcess::start("").await;
    fill(&b, "/queue/from", 3).await;
    let (code, out, err) = cli(
        &b,
        &[
            "move",
            "-d",
            "/queue/from",
            "--to",
            "/queue/to",
            "--limit",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "moved 1 message(s) from /queue/from to /queue/to"
    );
    let (code, out, err) = cli(
        &b,
        &[
            "move",
            "-d",
            "/queue/from",
            "--to",
            "/queue/copy",
            "--copy",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["copied"], 2);
    assert_eq!(b.dest_stats("/queue/from").await.unwrap()["ready"], 2);
    assert_eq!(b.dest_stats("/queue/to").await.unwrap()["ready"], 1);
    assert_eq!(b.dest_stats("/queue/copy").await.unwrap()["ready"], 2);
}

#[tokio::test]
async fn dlq_retry_puts_a_dead_letter_back() {
    let b = BrokerProcess::start("[destinations]\nmax-redeliveries = 0\n").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.send_msg("/queue/work", "poison", &[("persistent", "true")])
        .await;
    c.subscribe("s", "/queue/work", "client-individual", &[])
        .await;
    let m = c.recv_message().await;
    c.nack(&m).await;
    c.disconnect().await;
    eventually(Duration::from_secs(10), "the dead letter", || async {
        b.dest_stats("/queue/DLQ.work")
            .await
            .filter(|d| d["ready"] == 1)
    })
    .await;
    let (code, out, err) = cli(&b, &["dlq", "retry", "-d", "/queue/DLQ.work"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("retried 1 message(s) from /queue/DLQ.work"),
        "{out}"
    );
    let mut d = Stomp::connect(b.stomp).await;
    d.subscribe("w", "/queue/work", "auto", &[]).await;
    assert_eq!(body(&d.recv_message().await), "poison");
}

#[tokio::test]
async fn connections_are_listed_and_closed() {
    let b = BrokerProcess::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/watched", "auto", &[]).await;
    let (code, out, err) = cli(&b, &["connections", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let conn = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["subscriptions"][0]["destination"] == "/queue/watched")
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    let id = conn["id"]
        .as_str()
        .map_or_else(|| conn["id"].to_string(), str::to_owned);
    let (code, out, err) = cli(&b, &["connections", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("/queue/watched") && out.contains("stomp"),
        "{out}"
    );
    let (code, out, err) = cli(&b, &["connections", "close", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("closed connection {id}"));
    c.expect_closed().await;
    let (code, _, err) = cli(&b, &["connections", "close", &id]);
    assert_eq!(code, 4, "{err}");
}

/// `halyard dstat | head -1`: the reader goes away after one line and the
/// command ends quietly (no panic on the broken pipe).
#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let b = BrokerProcess::start("").await;
    // More rows than a pipe holds (64 KiB), so writes go on after `head`
    // has gone.
    let mut c = Stomp::connect(b.stomp).await;
    for i in 0..1500 {
        c.send_msg(&format!("/queue/pipe.{i:04}"), "m", &[]).await;
    }
    c.disconnect().await;
    let script = format!(
        "{} dstat --http {} 2>err.txt | head -1; cat err.txt",
        crate::support::halyard_bin(),
        b.http
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(b.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
