//! What a newcomer trips over on the command line (issue 18, part 7): the
//! failover line, one error line, ActiveMQ's destination spellings,
//! `receive --require/--delimiter`, the refused-port hint on a slave, and
//! bench's duplicate and redelivery counts across a real `kill -9`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cluster::{Cluster, ROLE_WAIT};
use crate::support::{BrokerProcess, halyard_bin, run_cli};
use halyard_testkit::process::wait_timeout;

const CONFIG: &str = "[journal]\nsegment-bytes = 1048576\n";

#[test]
fn a_bare_destination_name_gets_a_hint() {
    for cmd in ["send", "receive", "bench"] {
        let mut args = vec![cmd, "-d", "orders"];
        if cmd == "send" {
            args.push("x");
        }
        let (code, _, err) = run_cli(&args, None);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("did you mean /queue/orders"), "{cmd}: {err}");
    }
}

#[tokio::test]
async fn activemq_destination_spellings_are_accepted() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    let (code, _, err) = run_cli(
        &["send", "--url", &url, "-d", "queue://orders", "one"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    // The same queue under STOMP's name.
    let (code, out, err) = run_cli(
        &[
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/orders",
            "-n",
            "1",
            "--timeout",
            "10",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "one\n");
    let (code, out, err) = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "-d",
            "topic://prices",
            "--count",
            "50",
            "--no-progress",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/topic/prices"), "{out}");
}

#[tokio::test]
async fn receive_require_fails_with_its_own_exit_code() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    // `halyard receive` from /queue/r for `timeout` seconds, with `extra`.
    let receive = |timeout: &str, extra: &[&str]| {
        let mut args = vec![
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/r",
            "--timeout",
            timeout,
        ];
        args.extend_from_slice(extra);
        run_cli(&args, None)
    };
    for body in ["a", "b"] {
        let (code, _, err) = run_cli(&["send", "--url", &url, "-d", "/queue/r", body], None);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = receive("0.5", &["--require", "3", "--delimiter", "\\n--\\n"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(out, "a\n--\nb\n--\n");
    assert!(
        err.contains("received 2 message(s), fewer than --require 3"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    // Met: exit 0.
    run_cli(&["send", "--url", &url, "-d", "/queue/r", "c"], None);
    let (code, out, err) = receive("0.5", &["--require", "1", "--delimiter", "\\0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "c\0");
    // Nothing, without --require: exit 0, but said on standard error.
    let (code, out, err) = receive("0.2", &[]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(
        err.contains("no message arrived on /queue/r within"),
        "{err}"
    );
    // --require without --timeout would wait for ever: a usage error.
    let (code, _, err) = run_cli(&["receive", "-d", "/queue/r", "--require", "1"], None);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn a_refused_connection_on_a_slave_suggests_halyard_status() {
    let mut c = Cluster::new(CONFIG);
    c.master("a").await;
    let b = c.slave("b").await;
    let url = c.nodes[b].url();
    let (code, _, err) = run_cli(&["send", "--url", &url, "-d", "/queue/s", "x"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("connection refused: maybe a slave") && err.contains("halyard status"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    // A failover client that gives up prints its error once, with no WARN
    // line before it.
    let url = format!(
        "failover:({url})?maxReconnectAttempts=1&startupMaxReconnectAttempts=1&initialReconnectDelay=10"
    );
    let (code, _, err) = run_cli(&["send", "--url", &url, "-d", "/queue/s", "x"], None);
    assert_eq!(code, 1);
    assert!(!err.contains("WARN"), "{err}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
}

/// The README's demo, as a test: bench on a failover URL, kill -9 the
/// master, and the run ends with nothing missing, one failover line per
/// connection on standard error, and the duplicates counted.
#[tokio::test]
async fn bench_across_a_kill_9_prints_the_failover_and_loses_nothing() {
    let mut c = Cluster::new(CONFIG);
    let a = c.master("a").await;
    let b = c.slave("b").await;
    let url = format!(
        "failover:({},{})?randomize=false&initialReconnectDelay=10&maxReconnectDelay=200",
        c.nodes[a].url(),
        c.nodes[b].url()
    );
    let mut bench = Command::new(halyard_bin())
        .args([
            "bench",
            "--url",
            &url,
            "-d",
            "/queue/demo",
            "--duration",
            "4",
            "--persistent",
            "--receipt-every",
            "1",
            "--ack",
            "client-individual",
            "--size",
            "100",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once messages are flowing.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let enqueued = crate::support::dest_stats(c.nodes[a].http, "/queue/demo")
            .await
            .and_then(|v| v["enqueued"].as_u64())
            .unwrap_or(0);
        if enqueued >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "bench sent nothing to a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.nodes[a].kill();
    c.nodes[b].wait_role("master", ROLE_WAIT).await;
    let status = wait_timeout(&mut bench, Duration::from_secs(60)).expect("bench did not end");
    let out = bench.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "bench failed: {stdout}\n{stderr}");
    let resumed = stderr
        .lines()
        .filter(|l| l.contains("failover complete: resumed on"))
        .collect::<Vec<_>>();
    // One producer and one consumer: one line each.
    assert_eq!(resumed.len(), 2, "{stderr}");
    for l in &resumed {
        assert!(l.contains(&format!("lost {}", c.nodes[a].url())), "{l}");
        assert!(l.contains(&c.nodes[b].url()), "{l}");
        assert!(l.contains("replayed"), "{l}");
    }
    assert!(stderr.contains("producer 0: "), "{stderr}");
    // The failover is told once per connection, not also in WARN lines.
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("consumer 0: "), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["missing"], 0, "{report}");
    assert!(report["duplicates"].is_u64(), "{report}");
    assert!(report["redelivered"].is_u64(), "{report}");
    assert!(report["sent"].as_u64().unwrap() > 50, "{report}");
}
