//! `halyard receive`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use halyard_client::{AckMode, ClientError, Message, Receipt, SubscribeOptions};

/// Prints message bodies, one per line (or JSON lines with --json).
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: crate::Target,
    /// Stop after this many messages (default: run until --timeout or Ctrl-C).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Acknowledgement mode: auto, client or client-individual. With client
    /// modes each message is acknowledged after it is printed.
    #[arg(long, default_value = "client-individual")]
    ack: AckMode,
    /// Prefetch (most unacknowledged messages in flight).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Only messages this JMS selector selects, e.g. "color = 'red' AND
    /// weight > 2" (headers compared with numbers are converted; see
    /// docs/SELECTORS.md).
    #[arg(long)]
    selector: Option<String>,
    /// Give up after this many seconds without a message.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Print one JSON object per line for each message: destination,
    /// message_id, subscription, redelivered, headers and body (a body that
    /// is not UTF-8 as body_base64).
    #[arg(long, conflicts_with = "delimiter")]
    json: bool,
    /// Written after each message body instead of a newline; \n, \t, \0
    /// and \\ are understood, e.g. --delimiter '\n---\n' or --delimiter '\0'
    /// (for `xargs -0`).
    #[arg(long, value_name = "STR")]
    delimiter: Option<String>,
    /// Fail with exit code 5 (and say so) when fewer than N messages
    /// arrived before --timeout ended the wait: for scripts that check a
    /// queue got what it should. Needs --timeout.
    #[arg(long, value_name = "N", requires = "timeout")]
    require: Option<u64>,
}

/// Exit code when `--require N` was not met (1 is any other error, 2 a
/// usage error).
pub(crate) const EXIT_TOO_FEW: u8 = 5;

/// Fewer messages than `--require` asked for: its own exit code, so a
/// script can tell "the queue was short" from "the broker was not there".
#[derive(Debug, thiserror::Error)]
#[error("received {received} message(s), fewer than --require {required}")]
pub(crate) struct TooFew {
    received: u64,
    required: u64,
}

impl TooFew {
    pub(crate) fn exit_code(&self) -> u8 {
        EXIT_TOO_FEW
    }
}

/// `--delimiter`'s escapes.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let mut buf = [0u8; 4];
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some(other) => {
                out.push(b'\\');
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    out
}

/// Acknowledgements in flight at once.
const ACK_WINDOW: usize = 256;

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let idle = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => bail!("--timeout must be a positive number of seconds, got {t}"),
        None => None,
    };
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    if let (Some(r), Some(n)) = (args.require, args.count)
        && r > n
    {
        bail!("--require {r} is more than --count {n}: it could never be met");
    }
    let delimiter = match &args.delimiter {
        Some(d) => unescape(d),
        None => b"\n".to_vec(),
    };
    let client = crate::connect::connect(&args.target.url, None).await?;
    let mut options = SubscribeOptions::default().ack(args.ack);
    if let Some(p) = args.prefetch {
        options = options.prefetch(p);
    }
    if let Some(s) = args.selector {
        options = options.selector(s);
    }
    let mut sub = client.subscribe(&args.target.destination, options).await?;
    let mut stdout = std::io::stdout().lock();
    let mut received = 0u64;
    let mut acks = std::collections::VecDeque::new();
    let mut lost_acks = 0u64;
    while args.count.is_none_or(|n| received < n) {
        let next = match idle {
            Some(t) => match tokio::time::timeout(t, sub.next()).await {
                Ok(m) => m,
                Err(_) => {
                    if let Some(required) = args.require {
                        if received < required {
                            client.disconnect().await.ok();
                            return Err(TooFew { received, required }.into());
                        }
                        break;
                    }
                    if let Some(n) = args.count {
                        bail!(
                            "timed out after {:?} without a message: received {received} of {n}",
                            t
                        );
                    }
                    if received == 0 {
                        // Exit 0 all the same (use --require to fail), but
                        // an empty output should not leave a person
                        // wondering whether anything was listening.
                        eprintln!(
                            "halyard: no message arrived on {} within {:?}",
                            args.target.destination, t
                        );
                    }
                    break;
                }
            },
            None => sub.next().await,
        };
        let Some(m) = next else {
            let why = client
                .close_reason()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "connection closed".into());
            bail!("{why} (after {received} message(s))");
        };
        print(&mut stdout, &m, args.json, &delimiter).context("cannot write to standard output")?;
        if args.ack != AckMode::Auto {
            match client.ack_nowait(&m).await {
                Ok(r) => acks.push_back(r),
                Err(ClientError::AckNotConfirmed) => lost_acks += 1,
                Err(e) => return Err(e.into()),
            }
            if acks.len() >= ACK_WINDOW
                && let Some(r) = acks.pop_front()
            {
                lost_acks += settle(r).await?;
            }
        }
        received += 1;
    }
    drop(stdout);
    for r in acks {
        lost_acks += settle(r).await?;
    }
    if lost_acks > 0 {
        tracing::warn!(
            lost_acks,
            "acknowledgements lost to a failover: those messages were delivered again, flagged redelivered"
        );
    }
    client.disconnect().await?;
    Ok(())
}

/// Waits for an acknowledgement; one lost to a failover (counted: 1) is
/// not an error, since the broker delivers the message again, flagged
/// redelivered.
async fn settle(r: Receipt) -> Result<u64, ClientError> {
    match r.await {
        Ok(()) => Ok(0),
        Err(ClientError::AckNotConfirmed) => Ok(1),
        Err(e) => Err(e),
    }
}

fn print(out: &mut impl Write, m: &Message, json: bool, delimiter: &[u8]) -> std::io::Result<()> {
    if !json {
        out.write_all(&m.body)?;
        out.write_all(delimiter)?;
        return out.flush();
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in m.headers.iter() {
        headers
            .entry(k.to_owned())
            .or_insert_with(|| serde_json::Value::String(v.to_owned()));
    }
    let mut obj = serde_json::json!({
        "destination": m.destination(),
        "message_id": m.message_id(),
        "subscription": m.subscription(),
        "redelivered": m.redelivered(),
        "headers": headers,
    });
    match m.text() {
        Some(t) => obj["body"] = t.into(),
        None => {
            obj["body_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&m.body)
                .into()
        }
    }
    serde_json::to_writer(&mut *out, &obj)?;
    out.write_all(b"\n")?;
    out.flush()
}
