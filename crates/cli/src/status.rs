//! `halyard status`: a broker's role and health, from its admin API.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Shows a broker's role (master or slave), epoch, last takeover and load.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The broker's admin HTTP address.
    #[arg(
        long,
        env = "HALYARD_HTTP",
        default_value = "127.0.0.1:8161",
        value_name = "ADDR"
    )]
    http: String,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
    /// The user to log in to the admin API as (a broker with users asks
    /// for one in the `monitors` or `admins` group).
    #[arg(long, env = "HALYARD_ADMIN_USER", value_name = "USER")]
    user: Option<String>,
    /// That user's password (better given in the environment than on a
    /// command line others can see).
    #[arg(
        long,
        env = "HALYARD_ADMIN_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
}

/// The `Authorization` header line for `user` and `password`, if a user
/// is given.
fn authorization(user: Option<&str>, password: Option<&str>) -> String {
    use base64::Engine;
    match user {
        Some(u) => {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{u}:{}", password.unwrap_or("")));
            format!("Authorization: Basic {token}\r\n")
        }
        None => String::new(),
    }
}

/// GET over HTTP/1.0 (no chunking, the connection closes at the end).
async fn get(addr: &str, path: &str, auth: &str) -> anyhow::Result<(u16, String)> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .with_context(|| format!("no answer from the admin API at {addr} within 5 s"))?
        .with_context(|| format!("cannot reach the admin API at {addr}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP response")?;
    Ok((code, body.to_owned()))
}

fn ago(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let auth = authorization(args.user.as_deref(), args.password.as_deref());
    let (code, body) = get(&args.http, "/api/status", &auth).await?;
    if code == 401 {
        bail!(
            "the admin API at {} wants a login: {}; give --user and --password \
             (or HALYARD_ADMIN_USER and HALYARD_ADMIN_PASSWORD)",
            args.http,
            body.trim()
        );
    }
    if code != 200 {
        bail!(
            "the admin API at {} answered {code}: {}",
            args.http,
            body.trim()
        );
    }
    let v: Value = serde_json::from_str(&body).context("the status is not JSON")?;
    if args.json {
        println!("{v}");
        return Ok(());
    }
    let role = v["role"].as_str().unwrap_or("?");
    println!(
        "broker '{}' (halyard {}): {role}, epoch {}, since {}",
        v["name"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["epoch"],
        ago(v["since_ms"].as_u64().unwrap_or(0)),
    );
    match role {
        "master" => println!(
            "  serving STOMP on {}; {} connection(s), {} destination(s)",
            v["stomp"].as_str().unwrap_or("?"),
            v["connections"],
            v["destinations"]
        ),
        "slave" => {
            let o = &v["lock_owner"];
            if o.is_object() {
                println!(
                    "  waiting for the lock, held by broker '{}' on {} (pid {}, epoch {})",
                    o["name"].as_str().unwrap_or("?"),
                    o["host"].as_str().unwrap_or("?"),
                    o["pid"],
                    o["epoch"]
                );
            } else {
                println!("  waiting for the lock");
            }
        }
        _ => {}
    }
    match v["database"].as_str() {
        Some(db) => println!(
            "  store {}, database {db}",
            v["store"].as_str().unwrap_or("?")
        ),
        None => println!(
            "  data dir {}; store {}",
            v["data_dir"].as_str().unwrap_or("?"),
            v["store"].as_str().unwrap_or("?")
        ),
    }
    let t = &v["takeover"];
    if t.is_object() {
        println!(
            "  last takeover {}: waited {} ms for the lock; lock to serving {} ms (recovery {} ms)",
            ago(t["at_ms"].as_u64().unwrap_or(0)),
            t["waited_ms"],
            t["lock_to_serving_ms"],
            t["recovery_ms"]
        );
    }
    if let Some(r) = v["reason"].as_str() {
        println!("  {r}");
    }
    Ok(())
}
