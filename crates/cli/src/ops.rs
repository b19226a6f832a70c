//! The operator's commands over the admin API: `dstat`, `browse`, `purge`,
//! `move`, `dlq retry` and `connections`. Each prints a readable table by
//! default and the API's JSON with `--json`; failures carry the exit codes
//! of [`crate::admin_client`].

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admin_client::{AdminClient, AdminError, Conn, Dest, encode};

// ---------------------------------------------------------------- dstat

/// Destination statistics, like ActiveMQ's `activemq dstat`.
#[derive(clap::Args)]
pub(crate) struct DstatArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only queues or only topics.
    #[arg(long, value_parser = ["queue", "topic"])]
    kind: Option<String>,
    /// Only destinations whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Refresh every SECS seconds and show rates (messages per second)
    /// between two samples; stops with Ctrl-C or after --count samples.
    #[arg(long, value_name = "SECS")]
    watch: Option<f64>,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
    /// Print JSON (with --watch: one JSON document per line, rates added).
    #[arg(long)]
    json: bool,
}

/// A number field, or `fallback` when the broker does not send it (an older
/// broker's /api/destinations has fewer fields).
fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Messages waiting in a destination: `depth`, or its parts.
fn depth(d: &Value) -> u64 {
    num(d, "depth").unwrap_or_else(|| {
        num(d, "ready").unwrap_or(0)
            + num(d, "inflight").unwrap_or(0)
            + num(d, "delayed").unwrap_or(0)
    })
}

/// Messages consumed (acknowledged) from a destination.
fn dequeued(d: &Value) -> u64 {
    num(d, "dequeued").or_else(|| num(d, "acked")).unwrap_or(0)
}

fn kind_of(d: &Value) -> &str {
    match d.get("kind").and_then(Value::as_str) {
        Some(k) => k,
        None => {
            let name = d["destination"].as_str().unwrap_or("");
            if name.starts_with("/topic/") {
                "topic"
            } else {
                "queue"
            }
        }
    }
}

/// Destinations per request: the API pages (100 by default); dstat shows
/// them all, page by page, as `x-total-count` says.
const PAGE: usize = 1000;

async fn destinations(client: &AdminClient, a: &DstatArgs) -> Result<Vec<Value>, AdminError> {
    let mut q = Vec::new();
    if let Some(k) = &a.kind {
        q.push(format!("kind={k}"));
    }
    if let Some(f) = &a.filter {
        q.push(format!("q={}", encode(f)));
    }
    let mut all = Vec::new();
    loop {
        let path = format!(
            "/api/destinations?{}offset={}&limit={PAGE}",
            q.iter().map(|p| format!("{p}&")).collect::<String>(),
            all.len()
        );
        let (answer, v) = client.get_with_headers(&path).await?;
        let Value::Array(page) = v else {
            return Err(AdminError::BadAnswer {
                addr: client.shown().to_owned(),
                why: "/api/destinations is not a list".to_owned(),
            });
        };
        let got = page.len();
        all.extend(page);
        // A broker without paging sends everything and no total.
        let total = answer
            .header("x-total-count")
            .and_then(|t| t.parse::<usize>().ok());
        match total {
            Some(t) if got > 0 && all.len() < t => continue,
            _ => break,
        }
    }
    // Filtered here too: a broker without the query parameters sends all.
    let mut all: Vec<Value> = all
        .into_iter()
        .filter(|d| a.kind.as_deref().is_none_or(|k| kind_of(d) == k))
        .filter(|d| {
            a.filter
                .as_deref()
                .is_none_or(|f| d["destination"].as_str().unwrap_or("").contains(f))
        })
        .collect();
    all.sort_by(|x, y| {
        x["destination"]
            .as_str()
            .unwrap_or("")
            .cmp(y["destination"].as_str().unwrap_or(""))
    });
    Ok(all)
}

pub(crate) async fn dstat(a: DstatArgs) -> anyhow::Result<()> {
    let client = AdminClient::from_conn(&a.conn)?;
    let Some(secs) = a.watch else {
        let all = destinations(&client, &a).await?;
        if a.json {
            outln!("{}", Value::Array(all));
        } else {
            out!("{}", dstat_table(&all, None));
        }
        return Ok(());
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(AdminError::Usage(format!(
            "--watch must be a positive number of seconds, got {secs}"
        ))
        .into());
    }
    let period = Duration::from_secs_f64(secs);
    let mut before = destinations(&client, &a).await?;
    let mut at = Instant::now();
    let mut shown = 0u64;
    let tty = std::io::stdout().is_terminal();
    while a.count.is_none_or(|n| shown < n) {
        tokio::select! {
            _ = tokio::time::sleep_until((at + period).into()) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = destinations(&client, &a).await?;
        let elapsed = at.elapsed().as_secs_f64();
        at = Instant::now();
        let rated = with_rates(&before, &now, elapsed);
        if a.json {
            outln!("{}", Value::Array(rated));
        } else {
            if tty {
                // Clear the screen and go home, like watch(1).
                out!("\x1b[2J\x1b[H");
            }
            out!("{}", dstat_table(&rated, Some(elapsed)));
            outln!();
        }
        std::io::stdout().flush().ok();
        before = now;
        shown += 1;
    }
    Ok(())
}

/// `now` with `enqueue_rate` and `dequeue_rate` (per second since
/// `before`, `elapsed` seconds earlier) added to each destination.
fn with_rates(before: &[Value], now: &[Value], elapsed: f64) -> Vec<Value> {
    now.iter()
        .map(|d| {
            let prev = before.iter().find(|b| b["destination"] == d["destination"]);
            let rate = |f: fn(&Value) -> u64| match prev {
                Some(p) if elapsed > 0.0 => f(d).saturating_sub(f(p)) as f64 / elapsed,
                _ => 0.0,
            };
            let mut d = d.clone();
            if let Value::Object(m) = &mut d {
                m.insert(
                    "enqueue_rate".into(),
                    json!(rate(|v| num(v, "enqueued").unwrap_or(0))),
                );
                m.insert("dequeue_rate".into(), json!(rate(dequeued)));
            }
            d
        })
        .collect()
}

fn dstat_table(all: &[Value], rates: Option<f64>) -> String {
    let mut head = vec![
        "Name",
        "Queue Size",
        "Producer #",
        "Consumer #",
        "Enqueue #",
        "Dequeue #",
        "Expired #",
        "DLQ #",
        "Memory",
    ];
    if rates.is_some() {
        head.extend(["Enq/s", "Deq/s"]);
    }
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
    let rows = all
        .iter()
        .map(|d| {
            let mut row = vec![
                d["destination"].as_str().unwrap_or("?").to_owned(),
                depth(d).to_string(),
                opt(num(d, "producers")),
                opt(num(d, "consumers")),
                opt(num(d, "enqueued")),
                dequeued(d).to_string(),
                opt(num(d, "expired")),
                opt(num(d, "dead_lettered")),
                bytes(num(d, "memory_bytes").unwrap_or(0)),
            ];
            if rates.is_some() {
                for k in ["enqueue_rate", "dequeue_rate"] {
                    row.push(format!("{:.1}", d[k].as_f64().unwrap_or(0.0)));
                }
            }
            row
        })
        .collect::<Vec<_>>();
    if rows.is_empty() {
        return "no destinations\n".to_owned();
    }
    table(&head, &rows)
}

/// `n` bytes, readably.
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", n as f64 / 1_073_741_824.0),
    }
}

/// An aligned table: the first column left-aligned, the others right
/// (they are numbers), two spaces between columns.
pub(crate) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            if i > 0 {
                s.push_str("  ");
            }
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("{c:>w$}"));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A left-aligned table (for text columns).
fn text_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut push = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            s.push_str(&format!("{c:<w$}  "));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    push(head.to_vec());
    for r in rows {
        push(r.iter().map(String::as_str).collect());
    }
    out
}

// ---------------------------------------------------------------- browse

/// Shows a queue's messages without consuming them.
#[derive(clap::Args)]
pub(crate) struct BrowseArgs {
    #[command(flatten)]
    conn: Conn,
    /// The queue, e.g. /queue/orders (or queue://orders, or orders).
    #[arg(long, short = 'd')]
    destination: String,
    /// At most this many messages.
    #[arg(long, default_value_t = 50)]
    limit: u64,
    /// Skip this many messages first.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Show at most this many bytes of each body, or `all`.
    #[arg(long, value_name = "BYTES|all", default_value = "4096")]
    body_limit: String,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn browse(a: BrowseArgs) -> anyhow::Result<()> {
    let dest = Dest::parse(&a.destination)?.queue_only("browse")?;
    if a.body_limit != "all" && a.body_limit.parse::<u64>().is_err() {
        return Err(AdminError::Usage(format!(
            "--body-limit must be a number of bytes or 'all', got '{}'",
            a.body_limit
        ))
        .into());
    }
    let client = AdminClient::from_conn(&a.conn)?;
    let v = client
        .get_json(&format!(
            "{}/messages?offset={}&limit={}&body={}",
            dest.api_path(),
            a.offset,
            a.limit,
            a.body_limit
        ))
        .await?;
    if a.json {
        outln!("{v}");
        return Ok(());
    }
    let empty = Vec::new();
    let messages = v["messages"].as_array().unwrap_or(&empty);
    let mut out = std::io::stdout().lock();
    if messages.is_empty() {
        writeln!(
            out,
            "no messages in {} at offset {}",
            dest.stomp(),
            a.offset
        )?;
        return Ok(());
    }
    for m in messages {
        let mut flags = Vec::new();
        if m["in_flight"] == true {
            flags.push("in flight".to_owned());
        }
        if m["redelivered"] == true {
            flags.push("redelivered".to_owned());
        }
        if m["persistent"] == true {
            flags.push("persistent".to_owned());
        }
        if let Some(p) = m["priority"].as_u64() {
            flags.push(format!("priority {p}"));
        }
        if let Some(d) = m["deliveries"].as_u64() {
            flags.push(format!("{d} deliveries"));
        }
        writeln!(
            out,
            "#{} {} ({})",
            m["seq"],
            m["id"].as_str().unwrap_or("?"),
            flags.join(", ")
        )?;
        if let Some(d) = m["destination"].as_str() {
            writeln!(out, "  destination: {d}")?;
        }
        if let Some(h) = m["headers"].as_object() {
            for (k, v) in h {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                writeln!(out, "  {k}: {v}")?;
            }
        }
        let body = m["body"].as_str().unwrap_or("");
        let size = m["body_bytes"].as_u64().unwrap_or(body.len() as u64);
        let mut note = format!("{size} bytes");
        if m["body_encoding"] == "base64" {
            note.push_str(", base64");
        }
        if m["truncated"] == true {
            note.push_str(", truncated: --body-limit all shows it whole");
        }
        writeln!(out, "  body ({note}):")?;
        for l in body.lines() {
            writeln!(out, "    {l}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- purge

/// Deletes a queue's ready and delayed messages (in-flight ones stay).
#[derive(clap::Args)]
pub(crate) struct PurgeArgs {
    #[command(flatten)]
    conn: Conn,
    /// The queue, e.g. /queue/orders.
    #[arg(long, short = 'd')]
    destination: String,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// Asks `question` on the terminal; true for y/yes.
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub(crate) async fn purge(a: PurgeArgs) -> anyhow::Result<()> {
    let dest = Dest::parse(&a.destination)?.queue_only("purge")?;
    let client = AdminClient::from_conn(&a.conn)?;
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(AdminError::Usage(format!(
                "purge deletes the messages of {} for good: give --yes to do it without a terminal to confirm on",
                dest.stomp()
            ))
            .into());
        }
        // Say how many, so the confirmation means something.
        let stats = client.get_json(&dest.api_path()).await?;
        let q = format!(
            "Purge {} message(s) from {} at {}?",
            depth(&stats),
            dest.stomp(),
            client.shown()
        );
        if !confirm(&q) {
            return Err(AdminError::Usage("not purged".to_owned()).into());
        }
    }
    let v = client
        .post_json(&format!("{}/purge", dest.api_path()), &json!({}))
        .await?;
    if a.json {
        outln!("{v}");
    } else {
        outln!("purged {} message(s) from {}", v["purged"], dest.stomp());
    }
    Ok(())
}

// ---------------------------------------------------------------- move

/// Moves (or copies) messages from one queue to another.
#[derive(clap::Args)]
pub(crate) struct MoveArgs {
    #[command(flatten)]
    conn: Conn,
    /// The queue to take messages from.
    #[arg(long, short = 'd')]
    destination: String,
    /// Where they go, e.g. /queue/orders.
    #[arg(long, value_name = "DESTINATION")]
    to: String,
    /// Only the message with this id (message-id header); repeatable.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// Only the messages this JMS selector selects.
    #[arg(long)]
    selector: Option<String>,
    /// Copy instead of move: the messages stay where they are too.
    #[arg(long)]
    copy: bool,
    /// At most this many messages.
    #[arg(long)]
    limit: Option<u64>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn move_messages(a: MoveArgs) -> anyhow::Result<()> {
    let from = Dest::parse(&a.destination)?.queue_only("move")?;
    let to = Dest::parse(&a.to)?;
    let client = AdminClient::from_conn(&a.conn)?;
    let mut body = json!({"to": to.stomp(), "copy": a.copy});
    if !a.ids.is_empty() {
        body["ids"] = json!(a.ids);
    }
    if let Some(s) = &a.selector {
        body["selector"] = json!(s);
    }
    if let Some(n) = a.limit {
        body["limit"] = json!(n);
    }
    let v = client
        .post_json(&format!("{}/move", from.api_path()), &body)
        .await?;
    if a.json {
        outln!("{v}");
    } else if a.copy {
        outln!(
            "copied {} message(s) from {} to {}",
            v["copied"],
            from.stomp(),
            to.stomp()
        );
    } else {
        outln!(
            "moved {} message(s) from {} to {}",
            v["moved"],
            from.stomp(),
            to.stomp()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- dlq

/// Dead-letter queue operations.
#[derive(clap::Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCmd,
}

#[derive(clap::Subcommand)]
enum DlqCmd {
    /// Puts dead letters back on the destination they came from (their
    /// original-destination header), without their duplicate-detection id.
    Retry(RetryArgs),
}

#[derive(clap::Args)]
struct RetryArgs {
    #[command(flatten)]
    conn: Conn,
    /// The dead-letter queue: ActiveMQ.DLQ (the shared one), or DLQ.<name>
    /// for the individual strategy (Halyard's default).
    #[arg(long, short = 'd', default_value = "/queue/ActiveMQ.DLQ")]
    destination: String,
    /// Only the message with this id; repeatable.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// Only the messages this JMS selector selects.
    #[arg(long)]
    selector: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn dlq(a: DlqArgs) -> anyhow::Result<()> {
    let DlqCmd::Retry(a) = a.command;
    let dlq = Dest::parse(&a.destination)?.queue_only("dlq retry")?;
    let client = AdminClient::from_conn(&a.conn)?;
    let mut body = json!({});
    if !a.ids.is_empty() {
        body["ids"] = json!(a.ids);
    }
    if let Some(s) = &a.selector {
        body["selector"] = json!(s);
    }
    let v = client
        .post_json(&format!("{}/retry", dlq.api_path()), &body)
        .await?;
    if a.json {
        outln!("{v}");
    } else {
        outln!(
            "retried {} message(s) from {} ({} skipped)",
            v["retried"],
            dlq.stomp(),
            v["skipped"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- connections

/// Lists client connections, or closes one.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ConnectionsArgs {
    #[command(subcommand)]
    command: Option<ConnCmd>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(clap::Subcommand)]
enum ConnCmd {
    /// Lists the connections (the default).
    List(ListArgs),
    /// Closes a connection (its client sees the socket close).
    Close(CloseArgs),
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    conn: Conn,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CloseArgs {
    /// The connection's id, as `connections list` shows it.
    id: String,
    #[command(flatten)]
    conn: Conn,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn connections(a: ConnectionsArgs) -> anyhow::Result<()> {
    match a.command.unwrap_or(ConnCmd::List(a.list)) {
        ConnCmd::Close(a) => {
            let client = AdminClient::from_conn(&a.conn)?;
            let v = client
                .delete_json(&format!("/api/connections/{}", encode(&a.id)))
                .await?;
            if a.json {
                outln!("{v}");
            } else {
                outln!("closed connection {}", a.id);
            }
        }
        ConnCmd::List(a) => {
            let client = AdminClient::from_conn(&a.conn)?;
            let v = client.get_json("/api/connections").await?;
            if a.json {
                outln!("{v}");
                return Ok(());
            }
            let empty = Vec::new();
            let all = v.as_array().unwrap_or(&empty);
            if all.is_empty() {
                outln!("no connections");
                return Ok(());
            }
            let s = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            let rows = all
                .iter()
                .map(|c| {
                    let subs = c["subscriptions"]
                        .as_array()
                        .map(|subs| {
                            subs.iter()
                                .filter_map(|x| x["destination"].as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        s(&c["id"]),
                        s(&c["peer"]),
                        format!("{} {}", s(&c["protocol"]), s(&c["version"])),
                        s(&c["user"]),
                        s(&c["client_id"]),
                        c["connected_at_ms"]
                            .as_u64()
                            .map_or("-".to_owned(), crate::status::ago),
                        s(&c["inflight"]),
                        s(&c["unacked"]),
                        if subs.is_empty() {
                            "-".to_owned()
                        } else {
                            subs
                        },
                    ]
                })
                .collect::<Vec<_>>();
            out!(
                "{}",
                text_table(
                    &[
                        "ID",
                        "Peer",
                        "Protocol",
                        "User",
                        "Client ID",
                        "Connected",
                        "In-flight",
                        "Unacked",
                        "Subscriptions"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["Name", "N"],
            &[
                vec!["/queue/a".into(), "1".into()],
                vec!["/queue/bb".into(), "100".into()],
            ],
        );
        assert_eq!(t, "Name         N\n/queue/a     1\n/queue/bb  100\n");
    }

    #[test]
    fn rates_between_samples() {
        let before = vec![json!({"destination": "/queue/a", "enqueued": 10, "acked": 0})];
        let now = vec![json!({"destination": "/queue/a", "enqueued": 30, "acked": 10})];
        let r = with_rates(&before, &now, 2.0);
        assert_eq!(r[0]["enqueue_rate"], 10.0);
        assert_eq!(r[0]["dequeue_rate"], 5.0);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
