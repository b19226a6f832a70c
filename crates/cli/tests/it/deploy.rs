//! Running the real `halyard broker` as an operator deploys it: JSON logs
//! for a log shipper, every setting from the environment (the list printed
//! from the schema, all of it accepted at once), config mistakes shown with
//! TOML's caret, and a PostgreSQL group started before its database.

use std::time::{Duration, Instant};

use crate::support::cluster::*;
use crate::support::run_cli;
use halyard_testkit::stomp::WAIT;

/// `HALYARD_LOG_FORMAT=json` (the `--log-format` flag's variable): every
/// line the broker writes is one JSON object with a timestamp, a level, a
/// target and the event's fields, from start to a SIGTERM's shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let mut c = Cluster::new("");
    c.wrapper = ["env", "HALYARD_LOG_FORMAT=json", "{}"]
        .map(String::from)
        .to_vec();
    let a = c.master("a").await;
    c.nodes[a].sigterm();
    let status = c.nodes[a].wait_exit(ROLE_WAIT, "SIGTERM").await;
    assert!(status.success(), "{status}");
    let logs = c.nodes[a].logs();
    let mut messages = Vec::new();
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}\n{logs}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "no {key}: {line}");
        }
        let message = v["fields"]["message"].as_str().expect("fields.message");
        messages.push(message.to_owned());
    }
    assert!(
        messages.iter().any(|m| m.contains("master")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("stopped")),
        "{messages:?}"
    );
    // A typo is refused by the command line, naming the choices.
    let (code, _, err) = run_cli(&["broker", "--log-format", "jsn"], None);
    assert_eq!(code, 2);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}

/// `--print-env` lists every setting's variable from the schema; a broker
/// given all of them at once (with their printed defaults) starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_printed_variable_is_accepted() {
    let (code, out, err) = run_cli(&["broker", "--print-env"], None);
    assert_eq!(code, 0, "{err}");
    let vars: Vec<(&str, &str)> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("not VAR=value: {l}"))
        })
        .collect();
    for expected in [
        "HALYARD_LIMITS__MAX_BODY_BYTES",
        "HALYARD_JOURNAL__SYNC",
        "HALYARD_HA__LEASE_MS",
        "HALYARD_STORE__KIND",
        "HALYARD_SECURITY__USERS_FILE",
        "HALYARD_TLS__CERT_FILE",
    ] {
        assert!(
            vars.iter().any(|(v, _)| *v == expected),
            "{expected}:\n{out}"
        );
    }
    assert!(vars.len() > 50, "{} variables:\n{out}", vars.len());
    let mut c = Cluster::new("");
    let mut wrapper = vec!["env".to_owned()];
    for (var, value) in &vars {
        // Unset by default; the flags set the ports and the data directory.
        if !value.is_empty() {
            wrapper.push(format!("{var}={value}"));
        }
    }
    wrapper.push("{}".into());
    c.wrapper = wrapper;
    let a = c.master("a").await;
    c.nodes[a].sigterm();
    c.nodes[a].wait_exit(ROLE_WAIT, "SIGTERM").await;
}

/// A syntax error and a value of the wrong type are each shown once, with
/// the toml crate's snippet: where, the line, a caret under the mistake.
#[test]
fn config_errors_show_the_line_and_a_caret() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line, caret_line, what) in [
        ("name = \"x\n", "1 | name = \"x", "  |          ^", "string"),
        (
            "name = \"b\"\n[limits]\nmax-connections = \"many\"\n",
            "3 | max-connections = \"many\"",
            "  |                   ^^^^^^",
            "many",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run_cli(&["broker", "--config", path.to_str().unwrap()], None);
        println!("{err}");
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(err.matches("invalid config file").count(), 1, "{err}");
        assert_eq!(err.matches("TOML parse error at line").count(), 1, "{err}");
        let lines: Vec<&str> = err.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no line {line:?} in:\n{err}"));
        assert_eq!(lines.get(at + 1), Some(&caret_line), "{err}");
        assert!(err.contains(what), "{err}");
    }
}

/// A master/slave group started before its database waits for it instead
/// of exiting: each broker logs every failed attempt once, at WARN, with
/// the reason, its admin listener answers meanwhile (a slave's status), a
/// SIGTERM stops the wait at once, and the broker becomes master when the
/// database comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_started_before_its_database_waits_for_it() {
    let mut server = tokio::task::spawn_blocking(halyard_testkit::private_server)
        .await
        .unwrap();
    let url = server.url("postgres");
    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let mut c = Cluster::on_database("", &url);
    let a = c.spawn("a");
    let b = c.spawn("b");
    let waiting = "cannot reach the database; waiting for it";
    for n in [a, b] {
        let node = &c.nodes[n];
        halyard_testkit::eventually(WAIT, "two failed attempts logged", || async {
            (node.logs().matches(waiting).count() >= 2).then_some(())
        })
        .await;
        let status = halyard_testkit::eventually(WAIT, "the admin API", || node.status()).await;
        assert_eq!(status["role"], "slave", "{status}");
    }
    let line = c.nodes[a]
        .logs()
        .lines()
        .find(|l| l.contains(waiting))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("Connection refused"), "{line}");

    // Stoppable while it waits.
    let stop = c.nodes[b].sigterm();
    let status = c.nodes[b]
        .wait_exit(ROLE_WAIT, "SIGTERM while waiting for the database")
        .await;
    assert!(status.success(), "{status}");
    assert!(stop.elapsed() < Duration::from_secs(5));
    assert!(c.nodes[a].exited().is_none(), "{}", c.nodes[a].logs());

    let attempts_before = c.nodes[a].logs().matches(waiting).count();
    let up = Instant::now();
    let server = tokio::task::spawn_blocking(move || {
        server.start();
        server
    })
    .await
    .unwrap();
    c.nodes[a].wait_role("master", ROLE_WAIT).await;
    // The backoff is capped at 5 s.
    println!(
        "master {} ms after the database came up ({attempts_before} attempts logged before)",
        up.elapsed().as_millis()
    );
    assert!(up.elapsed() < Duration::from_secs(5) + ROLE_WAIT / 4);
    assert!(c.nodes[a].logs().contains("the database is reachable"));
    c.nodes[a].sigterm();
    c.nodes[a].wait_exit(ROLE_WAIT, "SIGTERM").await;
    drop(server);
}
