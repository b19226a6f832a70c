//! The `halyard` command line: help, errors, send/receive, configuration
//! precedence and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{BrokerProcess, halyard_bin, run_cli, write_file};
use halyard_stomp::{Command as StompCommand, Frame};
use halyard_testkit::free_port;
use halyard_testkit::process::wait_timeout;
use halyard_testkit::stomp::{Stomp, body};

#[test]
fn help_is_available_everywhere() {
    for args in [
        vec!["--help"],
        vec!["broker", "--help"],
        vec!["send", "--help"],
        vec!["receive", "--help"],
    ] {
        let (code, out, _) = run_cli(&args, None);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
    let (_, out, _) = run_cli(&["broker", "--help"], None);
    for flag in [
        "--config",
        "--name",
        "--data-dir",
        "--stomp",
        "--ws",
        "--openwire",
        "--http",
    ] {
        assert!(out.contains(flag), "broker --help lacks {flag}");
    }
    let (code, out, _) = run_cli(&["--version"], None);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = run_cli(&["send", "hello"], None);
    assert_eq!(code, 2);
    assert!(err.contains("--destination"), "{err}");
    let (code, _, err) = run_cli(&["receive", "-d", "/queue/a", "--ack", "sometimes"], None);
    assert_eq!(code, 2);
    assert!(err.contains("invalid ack mode"), "{err}");
    let (code, _, err) = run_cli(&["send", "-d", "/queue/a", "-H", "novalue", "x"], None);
    assert_eq!(code, 2);
    assert!(err.contains("NAME=VALUE"), "{err}");
    let (code, _, _) = run_cli(&["frobnicate"], None);
    assert_eq!(code, 2);
}

#[test]
fn connection_refused_names_the_address() {
    let port = free_port();
    let url = format!("stomp://127.0.0.1:{port}");
    let (code, _, err) = run_cli(&["send", "--url", &url, "-d", "/queue/a", "x"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one-line error expected: {err}");
}

#[test]
fn bad_urls_are_explained() {
    for url in ["http://x:1", "stomp://h:99999", "stomp://:5"] {
        let (code, _, err) = run_cli(&["send", "--url", url, "-d", "/queue/a", "x"], None);
        assert_eq!(code, 1);
        assert!(err.contains("invalid broker URL"), "{url}: {err}");
    }
}

#[tokio::test]
async fn send_and_receive_round_trip() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    let (code, _, err) = run_cli(
        &[
            "send",
            "--url",
            &url,
            "-d",
            "/queue/cli",
            "-n",
            "3",
            "--persistent",
            "-H",
            "k=v",
            "hi",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_cli(
        &["send", "--url", &url, "-d", "/queue/cli"],
        Some(b"from stdin"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(
        &[
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/cli",
            "-n",
            "4",
            "--timeout",
            "5",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hi\nhi\nhi\nfrom stdin\n");
}

#[tokio::test]
async fn receive_with_a_selector_takes_only_what_it_selects() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    for (body, color, weight) in [("a", "red", "1"), ("b", "blue", "5"), ("c", "red", "5")] {
        let color = format!("color={color}");
        let weight = format!("weight={weight}");
        let args = [
            "send",
            "--url",
            &url,
            "-d",
            "/queue/sel",
            "-H",
            &color,
            "-H",
            &weight,
            body,
        ];
        let (code, _, err) = run_cli(&args, None);
        assert_eq!(code, 0, "{err}");
    }
    let receive = |selector: &'static str| {
        let url = url.clone();
        move |n: &'static str| {
            run_cli(
                &[
                    "receive",
                    "--url",
                    &url,
                    "-d",
                    "/queue/sel",
                    "-n",
                    n,
                    "--timeout",
                    "5",
                    "--selector",
                    selector,
                ],
                None,
            )
        }
    };
    let (code, out, err) = receive("color = 'red' AND weight > 2")("1");
    assert_eq!((code, out.as_str()), (0, "c\n"), "{err}");
    let (code, out, err) = receive("color = 'red'")("1");
    assert_eq!((code, out.as_str()), (0, "a\n"), "{err}");
    // An invalid selector is the broker's error, with its position.
    let (code, _, err) = receive("color = = 'red'")("1");
    assert_eq!(code, 1);
    assert!(err.contains("invalid selector at position 8"), "{err}");
    // b waits for a consumer that takes it.
    let (code, out, err) = receive("weight = 5")("1");
    assert_eq!((code, out.as_str()), (0, "b\n"), "{err}");
}

#[tokio::test]
async fn receive_json_shows_headers_and_the_redelivered_flag() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/j", "again", &[("color", "red")]).await;
    // Take the message without acknowledging it, then disconnect.
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/j", "client", &[]).await;
    c.recv_message().await;
    drop(c);
    let (code, out, err) = run_cli(
        &[
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/j",
            "-n",
            "1",
            "--timeout",
            "5",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["body"], "again");
    assert_eq!(v["redelivered"], true);
    assert_eq!(v["destination"], "/queue/j");
    assert_eq!(v["headers"]["color"], "red");
    assert!(v["message_id"].as_str().unwrap().starts_with("ID:"));
}

#[tokio::test]
async fn receive_times_out_with_a_clear_error() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    run_cli(&["send", "--url", &url, "-d", "/queue/t", "one"], None);
    let (code, out, err) = run_cli(
        &[
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/t",
            "-n",
            "2",
            "--timeout",
            "0.3",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert_eq!(out, "one\n");
    assert!(err.contains("received 1 of 2"), "{err}");
    // Without --count, a timeout just ends the run.
    let (code, _, _) = run_cli(
        &[
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/t",
            "--timeout",
            "0.2",
        ],
        None,
    );
    assert_eq!(code, 0);
}

/// Starts `halyard broker` with explicit args and env; returns its name as
/// reported by /api/status.
async fn broker_name(args: &[&str], env: &[(&str, &str)]) -> String {
    broker_status(args, env).await["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Starts `halyard broker` with explicit args and env; returns its
/// /api/status.
async fn broker_status(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let stomp = format!("127.0.0.1:{}", free_port());
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(halyard_bin());
    cmd.arg("broker")
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--stomp")
        .arg(&stomp)
        .args(["--ws", "127.0.0.1:0", "--openwire", "127.0.0.1:0"])
        .arg("--http")
        .arg(http.to_string())
        .env_remove("HALYARD_NAME")
        .env_remove("HALYARD_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("broker.log")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let log = dir.path().join("broker.log");
    let status = halyard_testkit::eventually(Duration::from_secs(10), "admin HTTP", || {
        if let Some(exit) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("broker {args:?} exited ({exit}):\n{log}");
        }
        async move {
            let s = tokio::net::TcpStream::connect(http).await.ok()?;
            drop(s);
            Some(halyard_testkit::http::http_get(http, "/api/status").await)
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    serde_json::from_str(&status.1).unwrap()
}

/// Every setting has an environment variable, `HALYARD_SECTION__KEY` (or
/// `HALYARD_KEY` at the top level); one naming no setting stops start-up.
#[tokio::test]
async fn every_setting_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let stomp = format!("127.0.0.1:{}", free_port());
    let listeners = format!(r#"[{{protocol = "stomp", address = "{stomp}"}}]"#);
    let mut child = Command::new(halyard_bin())
        .arg("broker")
        .args(["--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("HALYARD_STOMP")
        .env("HALYARD_WS", "127.0.0.1:0")
        .env("HALYARD_OPENWIRE", "127.0.0.1:0")
        .env("HALYARD_LISTENERS", &listeners)
        .env("HALYARD_LIMITS__MAX_BODY_BYTES", "4096")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = stomp.parse().unwrap();
    halyard_testkit::eventually(
        Duration::from_secs(10),
        "the listener from the environment",
        || async move { tokio::net::TcpStream::connect(addr).await.ok() },
    )
    .await;
    let mut c = Stomp::connect(addr).await;
    c.send(
        Frame::new(StompCommand::Send)
            .header("destination", "/queue/env")
            .body(vec![b'x'; 5000]),
    )
    .await;
    let e = c.expect_error().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("4096"),
        "{e:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let (code, _, err) = run_cli_env(
        &[
            "broker",
            "--stomp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--openwire",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        &[("HALYARD_LIMITS__MAX_CONECTIONS", "5")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("HALYARD_LIMITS__MAX_CONECTIONS") && err.contains("limits.max-conections"),
        "{err}"
    );
    let (code, _, err) = run_cli_env(
        &[
            "broker",
            "--stomp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--openwire",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        &[("HALYARD_LIMITS__MAX_BODY_BYTES", "lots")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("max-body-bytes"), "{err}");
}

#[tokio::test]
async fn settings_precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "h.toml", "name = \"from-file\"\n");
    let cfg = cfg.to_str().unwrap();
    assert_eq!(broker_name(&[], &[]).await, "halyard");
    assert_eq!(broker_name(&["--config", cfg], &[]).await, "from-file");
    assert_eq!(
        broker_name(&[], &[("HALYARD_CONFIG", cfg)]).await,
        "from-file"
    );
    assert_eq!(
        broker_name(&["--config", cfg], &[("HALYARD_NAME", "from-env")]).await,
        "from-env"
    );
    assert_eq!(
        broker_name(
            &["--config", cfg, "--name", "from-flag"],
            &[("HALYARD_NAME", "from-env")]
        )
        .await,
        "from-flag"
    );
}

#[test]
fn bad_config_is_reported_with_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(dir.path(), "bad.toml", "[limits]\nmax-conections = 5\n");
    let (code, _, err) = run_cli(&["broker", "--config", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("max-conections") && err.contains("bad.toml"),
        "{err}"
    );
    let zero = write_file(dir.path(), "zero.toml", "[limits]\nmax-connections = 0\n");
    let (code, _, err) = run_cli(&["broker", "--config", zero.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("limits.max-connections"), "{err}");
    let (code, _, err) = run_cli(&["broker", "--config", "/nonexistent/halyard.toml"], None);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/halyard.toml"), "{err}");
}

#[tokio::test]
async fn a_busy_port_is_a_clear_start_up_error() {
    let b = BrokerProcess::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let stomp = b.stomp.to_string();
    let (code, _, err) = run_cli(
        &[
            "broker",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--stomp",
            &stomp,
            "--ws",
            "127.0.0.1:0",
            "--openwire",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot listen for STOMP on {stomp}")),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut b = BrokerProcess::start("").await;
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/g", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/g", "before", &[]).await;
    assert_eq!(body(&c.recv_message().await), "before");
    let status = b.terminate();
    assert!(status.success(), "exit status {status}");
    let e = c.expect_error().await;
    assert!(e.headers.get("message").unwrap().contains("shutting down"));
    let logs = b.logs();
    assert!(logs.contains("halyard broker stopped"), "{logs}");
    assert!(logs.contains("connection opened") && logs.contains("connection closed"));
}

#[tokio::test]
async fn start_up_logs_version_addresses_and_data_dir() {
    let b = BrokerProcess::start("").await;
    let logs = halyard_testkit::eventually(Duration::from_secs(5), "start-up line", || async {
        let l = b.logs();
        l.contains("halyard broker started").then_some(l)
    })
    .await;
    assert!(logs.contains(&b.stomp.to_string()));
    assert!(logs.contains(&b.http.to_string()));
    assert!(logs.contains(env!("CARGO_PKG_VERSION")));
    assert!(logs.contains("store=Journal data="), "{logs}");
    let (status, text) = b.http_get("/healthz").await;
    assert_eq!((status, text.trim()), (200, "ok"));
}

#[test]
fn an_unusable_data_dir_fails_start_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "not-a-dir", "x");
    let data = file.join("sub");
    let mut child = Command::new(halyard_bin())
        .args(["broker", "--data-dir"])
        .arg(&data)
        .args([
            "--stomp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--openwire",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("cannot create data directory") && err.contains(data.to_str().unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn bench_smoke_queue_topic_and_drain() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out.trim()).unwrap() };

    let (code, out, err) = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "--producers",
            "2",
            "--consumers",
            "2",
            "--count",
            "2000",
            "--persistent",
            "--receipt-every",
            "10",
            "--ack",
            "client-individual",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["sent"], 2000);
    assert_eq!(v["received"], 2000);
    assert_eq!(v["missing"], 0);
    assert_eq!(v["receipt_latency_us"]["count"], 200);
    assert_eq!(v["e2e_latency_us"]["count"], 2000);
    assert!(v["send_rate"].as_f64().unwrap() > 0.0);

    // Topic fan-out: every subscriber gets every message.
    let (code, out, err) = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "-d",
            "/topic/b",
            "--consumers",
            "3",
            "--count",
            "500",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(500), Some(1500))
    );

    // Fill, then drain with client acks; the human-readable report.
    let (code, _, err) = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "-d",
            "/queue/fill",
            "--consumers",
            "0",
            "--count",
            "1000",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "-d",
            "/queue/fill",
            "--producers",
            "0",
            "--count",
            "1000",
            "--ack",
            "client",
            "--prefetch",
            "100",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("received") && out.contains("1000 msgs"),
        "{out}"
    );
    assert!(out.contains("end-to-end  p50"), "{out}");

    // Draining more than is there reports the shortfall and fails.
    let (code, out, err) = run_cli(
        &[
            "bench",
            "--url",
            &url,
            "-d",
            "/queue/empty",
            "--producers",
            "0",
            "--count",
            "5",
            "--drain-timeout",
            "0.3",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(json(&out)["missing"], 5);
    assert!(err.contains("5 message(s) missing"), "{err}");
}

/// `--selectors N`: producers tag each message `shard` = i mod N and
/// consumer k selects `shard = 'k'`, so each message goes to exactly one
/// consumer, on a queue and on a topic.
#[tokio::test]
async fn bench_selectors_split_the_messages_between_selective_consumers() {
    let b = BrokerProcess::start("").await;
    let url = b.url();
    let json = |out: &str| -> serde_json::Value { serde_json::from_str(out.trim()).unwrap() };
    let bench = |extra: &[&str]| {
        let mut all = vec!["bench", "--url", url.as_str(), "--json"];
        all.extend_from_slice(extra);
        let (code, out, err) = run_cli(&all, None);
        assert_eq!(code, 0, "{extra:?}: {err}");
        json(&out)
    };

    // A queue: 3 selective consumers share 3000 persistent messages.
    let v = bench(&[
        "-d",
        "/queue/shards",
        "--producers",
        "2",
        "--consumers",
        "3",
        "--selectors",
        "3",
        "--count",
        "3000",
        "--persistent",
        "--receipt-every",
        "50",
    ]);
    assert_eq!(
        (&v["sent"], &v["received"], &v["missing"], &v["extra"]),
        (&3000.into(), &3000.into(), &0.into(), &0.into()),
        "{v}"
    );
    assert_eq!(v["selectors"], 3);
    assert_eq!(v["e2e_latency_us"]["count"], 3000);

    // A topic: each message reaches one of the 3 subscribers, not all 3.
    let v = bench(&[
        "-d",
        "/topic/shards",
        "--consumers",
        "3",
        "--selectors",
        "3",
        "--count",
        "600",
    ]);
    assert_eq!(
        (&v["sent"], &v["received"], &v["extra"]),
        (&600.into(), &600.into(), &0.into()),
        "{v}"
    );

    // The producers' tags: a third of a filled queue is shard 2, in order.
    let v = bench(&[
        "-d",
        "/queue/tagged",
        "--consumers",
        "0",
        "--selectors",
        "3",
        "--count",
        "30",
    ]);
    assert_eq!(v["sent"], 30);
    let mut c = Stomp::connect(b.stomp).await;
    c.subscribe("s", "/queue/tagged", "auto", &[("selector", "shard = '2'")])
        .await;
    for _ in 0..10 {
        let m = c.recv_message().await;
        assert_eq!(m.headers.get("shard"), Some("2"), "{m:?}");
    }
    // Nothing else of shard 2 was queued: the next one is a marker sent now.
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/tagged", "marker", &[("shard", "2")])
        .await;
    assert_eq!(body(&c.recv_message().await), "marker");
}

#[test]
fn bench_rejects_impossible_plans() {
    for (args, want) in [
        (
            vec!["--producers", "0", "--consumers", "0"],
            "nothing to do",
        ),
        (vec!["--producers", "0"], "needs --count"),
        (
            vec!["--producers", "0", "-d", "/topic/x", "--count", "1"],
            "needs a queue",
        ),
        (vec!["--duration=-1"], "--duration"),
        (vec!["--duration", "nan"], "--duration"),
        (vec!["--count", "0"], "--count must be at least 1"),
        (vec!["--prefetch", "0"], "--prefetch"),
        (vec!["--selectors", "0"], "--selectors must be between 1"),
        (
            vec!["--selectors", "4", "--consumers", "2"],
            "--selectors 4 needs --consumers 4",
        ),
        (
            vec![
                "--selectors",
                "2",
                "--consumers",
                "2",
                "-d",
                "/temp-queue/x",
            ],
            "needs a /queue/NAME or /topic/NAME",
        ),
    ] {
        let mut all = vec!["bench", "--url", "stomp://127.0.0.1:1"];
        all.extend(args.iter().copied());
        let (code, _, err) = run_cli(&all, None);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, _, err) = run_cli(&["bench", "--count", "5", "--duration", "1"], None);
    assert_eq!(code, 2, "{err}");
}

/// `[[listeners]]` opens one listener per entry; `--stomp` sets the first
/// STOMP listener's address (and `--ws` and `--openwire`, with no entry of
/// their protocol, add one each); all serve the same broker.
#[tokio::test]
async fn listeners_from_the_config_all_serve_the_broker() {
    let second = format!("127.0.0.1:{}", free_port());
    let b = BrokerProcess::start(&format!(
        "[[listeners]]\nprotocol = \"stomp\"\naddress = \"127.0.0.1:1\"\n\n\
         [[listeners]]\nprotocol = \"stomp\"\naddress = \"{second}\"\n"
    ))
    .await;
    let mut c = Stomp::connect(second.parse().unwrap()).await;
    c.subscribe("s", "/queue/two-doors", "auto", &[]).await;
    let mut p = Stomp::connect(b.stomp).await;
    p.send_msg("/queue/two-doors", "through the first", &[])
        .await;
    assert_eq!(body(&c.recv_message().await), "through the first");
    let (_, status) = b.http_get("/api/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let listeners = status["listeners"].as_array().unwrap();
    assert_eq!(
        listeners.len(),
        4,
        "the --stomp address replaced the first entry's, --ws and --openwire added one each: \
         {status}"
    );
    assert!(
        listeners.contains(&format!("stomp {second}").into()),
        "{status}"
    );
    assert!(
        listeners.contains(&format!("openwire {}", b.openwire).into()),
        "{status}"
    );
}

/// A listener for a protocol the broker does not speak is a clear start-up
/// error that names the protocols it does.
#[test]
fn an_unknown_listener_protocol_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("halyard.toml");
    std::fs::write(
        &config,
        "[[listeners]]\nprotocol = \"amqp\"\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(
        &[
            "broker",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "unknown listener protocol 'amqp' (this broker speaks: stomp, stomp+ssl, ws, ws+ssl, openwire, openwire+ssl, auto, auto+ssl)"
        ),
        "{err}"
    );
}

/// Runs the CLI with extra environment variables; exit code, stdout, stderr.
fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(halyard_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
