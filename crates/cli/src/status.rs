//! `halyard status`: a broker's role and health, from its admin API.

use serde_json::{Value, json};

use crate::admin_client::{AdminClient, AdminError, Login};

/// Shows a broker's role (master or slave), epoch, last takeover and load;
/// with several `--http` addresses, one line per broker of a pair or group.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The broker's admin HTTP address (HOST:PORT, http://HOST:PORT or
    /// https://HOST:PORT). Repeat it for each broker of a master/slave
    /// group: one line per broker, and the exit code says whether exactly
    /// one is master.
    #[arg(
        long,
        env = "HALYARD_HTTP",
        default_value = "127.0.0.1:8161",
        value_name = "ADDR"
    )]
    http: Vec<String>,
    /// Print the status as JSON (with several addresses: a list of
    /// {address, status, error}).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    login: Login,
}

/// GET /api/status from `addr`.
async fn fetch(addr: &str, login: &Login) -> Result<Value, AdminError> {
    AdminClient::new(addr, login)?.get_json("/api/status").await
}

/// `ms` (milliseconds since the epoch) as "N s ago".
pub(crate) fn ago(ms: u64) -> String {
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
    if args.http.len() > 1 {
        return group(&args).await;
    }
    let addr = args.http.first().map_or("127.0.0.1:8161", String::as_str);
    let v = fetch(addr, &args.login).await?;
    if args.json {
        outln!("{v}");
        return Ok(());
    }
    let role = v["role"].as_str().unwrap_or("?");
    outln!(
        "broker '{}' (halyard {}): {role}, epoch {}, since {}",
        v["name"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["epoch"],
        ago(v["since_ms"].as_u64().unwrap_or(0)),
    );
    match role {
        "master" => outln!(
            "  serving STOMP on {}; {} connection(s), {} destination(s)",
            v["stomp"].as_str().unwrap_or("?"),
            v["connections"],
            v["destinations"]
        ),
        "slave" => {
            let o = &v["lock_owner"];
            if o.is_object() {
                outln!(
                    "  waiting for the lock, held by broker '{}' on {} (pid {}, epoch {})",
                    o["name"].as_str().unwrap_or("?"),
                    o["host"].as_str().unwrap_or("?"),
                    o["pid"],
                    o["epoch"]
                );
            } else {
                outln!("  waiting for the lock");
            }
        }
        _ => {}
    }
    match v["database"].as_str() {
        Some(db) => outln!(
            "  store {}, database {db}",
            v["store"].as_str().unwrap_or("?")
        ),
        None => outln!(
            "  data dir {}; store {}",
            v["data_dir"].as_str().unwrap_or("?"),
            v["store"].as_str().unwrap_or("?")
        ),
    }
    let t = &v["takeover"];
    if t.is_object() {
        outln!(
            "  last takeover {}: waited {} ms for the lock; lock to serving {} ms (recovery {} ms)",
            ago(t["at_ms"].as_u64().unwrap_or(0)),
            t["waited_ms"],
            t["lock_to_serving_ms"],
            t["recovery_ms"]
        );
    }
    if let Some(r) = v["reason"].as_str() {
        outln!("  {r}");
    }
    Ok(())
}

/// One line per broker of a group; exactly one master is success.
async fn group(args: &Args) -> anyhow::Result<()> {
    let answers = ask_all(&args.http, &args.login).await;
    let masters: Vec<&str> = answers
        .iter()
        .filter_map(|(a, r)| match r {
            Ok(v) if v["role"] == "master" => Some(a.as_str()),
            _ => None,
        })
        .collect();
    if args.json {
        let all: Vec<Value> = answers
            .iter()
            .map(|(a, r)| match r {
                Ok(v) => json!({"address": a, "status": v, "error": null}),
                Err(e) => json!({"address": a, "status": null, "error": e.to_string()}),
            })
            .collect();
        outln!("{}", Value::Array(all));
    } else {
        let width = args.http.iter().map(String::len).max().unwrap_or(0);
        for (a, r) in &answers {
            outln!("{a:<width$}  {}", line(r));
        }
    }
    match masters.as_slice() {
        [_] => Ok(()),
        [] => Err(AdminError::NoSingleMaster(format!(
            "no master among {} broker(s)",
            answers.len()
        ))
        .into()),
        several => Err(AdminError::NoSingleMaster(format!(
            "{} masters: {}",
            several.len(),
            several.join(", ")
        ))
        .into()),
    }
}

/// Asks every broker at once (a slow or dead one does not delay the
/// others); the answers in the order of `addrs`.
async fn ask_all(addrs: &[String], login: &Login) -> Vec<(String, Result<Value, AdminError>)> {
    let asks = addrs.iter().map(|a| fetch(a, login));
    let answers = futures_join_all(asks).await;
    addrs.iter().cloned().zip(answers).collect()
}

/// Runs the futures concurrently on this task, keeping their order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (i, f) in pending.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// One broker's line: role, name, epoch, and what it waits for or when it
/// took over.
fn line(r: &Result<Value, AdminError>) -> String {
    let v = match r {
        Ok(v) => v,
        Err(e) => return format!("unreachable  {e}"),
    };
    let role = v["role"].as_str().unwrap_or("?");
    let mut s = format!(
        "{role:<7}  '{}'  epoch {}  since {}",
        v["name"].as_str().unwrap_or("?"),
        v["epoch"],
        ago(v["since_ms"].as_u64().unwrap_or(0))
    );
    match role {
        "master" => {
            let t = &v["takeover"];
            if t.is_object() {
                s.push_str(&format!(
                    "  last takeover {} (waited {} ms, lock to serving {} ms)",
                    ago(t["at_ms"].as_u64().unwrap_or(0)),
                    t["waited_ms"],
                    t["lock_to_serving_ms"]
                ));
            }
        }
        "slave" => {
            let o = &v["lock_owner"];
            if o.is_object() {
                s.push_str(&format!(
                    "  waiting for '{}' on {} (pid {})",
                    o["name"].as_str().unwrap_or("?"),
                    o["host"].as_str().unwrap_or("?"),
                    o["pid"]
                ));
            } else {
                s.push_str("  waiting for the lock");
            }
        }
        _ => {}
    }
    s
}
