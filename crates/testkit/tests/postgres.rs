//! The test PostgreSQL servers and databases work: databases are distinct,
//! empty and connectable; a private server stops, starts, crashes and
//! recovers; throwaway servers die with their process.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use halyard_testkit::{database, private_server, server_url};
use postgres::{Client, NoTls};

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Tables, views, sequences... outside the system schemas.
fn user_relations(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn databases_are_new_empty_and_distinct() {
    let a = database("testkit a");
    let b = database("testkit b");
    assert_ne!(a, b);
    let (name_a, name_b) = (a.rsplit('/').next().unwrap(), b.rsplit('/').next().unwrap());
    assert!(name_a.starts_with("t_testkit_a_"), "{a}");

    let mut ca = connect(&a);
    let mut cb = connect(&b);
    let current: String = ca
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(current, name_a);
    let current: String = cb
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(current, name_b);
    assert_eq!(user_relations(&mut ca), 0);
    assert_eq!(user_relations(&mut cb), 0);

    ca.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    assert_eq!(user_relations(&mut ca), 1);
    assert_eq!(user_relations(&mut cb), 0, "databases share tables");

    // The admin URL reaches the same server, as a superuser.
    let mut admin = connect(&server_url());
    let found: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname IN ($1, $2)",
            &[&name_a, &name_b],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 2);
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(superuser);
}

#[test]
fn private_server_stops_starts_and_recovers_from_a_kill() {
    // Started from a thread that then exits: the server must outlive it (the
    // parent-death signal is tied to the thread that spawns the server).
    let mut server = thread::spawn(private_server).join().unwrap();
    thread::sleep(Duration::from_millis(200));
    assert!(server.is_running());
    let url = server.url("postgres");
    let dir = server.dir().to_owned();
    assert!(dir.join("data/PG_VERSION").is_file());

    let mut client = connect(&url);
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    let fsync: String = client.query_one("SHOW fsync", &[]).unwrap().get(0);
    assert_eq!(fsync, "on");

    server.stop();
    assert!(!server.is_running());
    assert!(
        client.batch_execute("SELECT 1").is_err(),
        "a stopped server served a query"
    );
    assert!(
        Client::connect(&url, NoTls).is_err(),
        "a stopped server accepted a connection"
    );

    server.start();
    assert_eq!(server.url("postgres"), url, "the port changed");
    let mut client = connect(&url);
    client.batch_execute("INSERT INTO t VALUES (2)").unwrap();

    server.kill();
    assert!(!server.is_running());
    assert!(
        client.batch_execute("SELECT 1").is_err(),
        "a killed server served a query"
    );
    assert!(
        Client::connect(&url, NoTls).is_err(),
        "a killed server accepted a connection"
    );

    // Crash recovery keeps what was committed.
    server.start();
    let mut client = connect(&url);
    let sum: i64 = client
        .query_one("SELECT sum(x) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(sum, 3);

    // Killed and dropped without a restart; then dropped while running.
    server.kill();
    drop(server);
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let server = private_server();
    let dir = server.dir().to_owned();
    drop(server);
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// Run as a child process by `throwaway_servers_die_with_their_process`:
/// starts the shared throwaway server and a private one, prints their URLs
/// and directory, and exits without dropping anything.
#[test]
fn child_process_helper() {
    if std::env::var_os("HALYARD_TESTKIT_CHILD").is_none() {
        return;
    }
    let shared = server_url();
    let private = private_server();
    println!("SHARED={shared}");
    println!("PRIVATE={}", private.url("postgres"));
    println!("DIR={}", private.dir().display());
    std::process::exit(0);
}

#[test]
fn throwaway_servers_die_with_their_process() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HALYARD_TESTKIT_CHILD", "1")
        .env_remove("HALYARD_TEST_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|line| Some(line.split_once(&format!("{key}="))?.1))
            .unwrap_or_else(|| panic!("no {key} in\n{stdout}"))
            .to_owned()
    };
    let (shared, private, dir) = (value("SHARED"), value("PRIVATE"), value("DIR"));
    assert!(
        shared.starts_with("postgres://postgres@127.0.0.1:"),
        "{shared}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gone = Client::connect(&shared, NoTls).is_err()
            && Client::connect(&private, NoTls).is_err()
            && !std::path::Path::new(&dir).exists();
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a server or {dir} outlived its process by 20 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Tests of async code call these from within a tokio runtime, where the
/// `postgres` crate's blocking client would panic if called directly.
#[tokio::test]
async fn usable_from_async_tests() {
    let url = database("async");
    let mut server = private_server();
    server.stop();
    server.start();
    server.kill();
    server.start();
    let server_url = server.url("postgres");
    tokio::task::spawn_blocking(move || {
        connect(&url);
        connect(&server_url);
    })
    .await
    .unwrap();
}
