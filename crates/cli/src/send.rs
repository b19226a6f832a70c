//! `halyard send`.

use std::collections::VecDeque;
use std::io::Read;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use halyard_client::SendMessage;

/// Sends BODY (or standard input) COUNT times.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: crate::Target,
    /// How many copies to send.
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    /// Send persistent messages (each is stored before the broker confirms).
    #[arg(long)]
    persistent: bool,
    /// Ask for a receipt for every message, persistent or not.
    #[arg(long)]
    receipt: bool,
    /// Extra header, as NAME=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Message body; read from standard input when absent.
    body: Option<String>,
}

/// A `--header` that is not `NAME=VALUE` with a name. clap prints it after
/// the option's name, so the message only says what was expected.
#[derive(Debug, thiserror::Error)]
#[error("expected NAME=VALUE, got '{given}'")]
struct HeaderArgError {
    given: String,
}

fn parse_header(s: &str) -> Result<(String, String), HeaderArgError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(HeaderArgError {
            given: s.to_owned(),
        }),
    }
}

/// Receipts awaited at once: enough to keep a store's group commit busy.
const WINDOW: usize = 1024;

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let body = match args.body {
        Some(b) => Bytes::from(b),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the body from standard input")?;
            Bytes::from(buf)
        }
    };
    let client = crate::connect::connect(&args.target.url, None).await?;
    let started = Instant::now();
    let mut pending = VecDeque::new();
    for _ in 0..args.count {
        let mut m = SendMessage::new(args.target.destination.clone(), body.clone())
            .persistent(args.persistent);
        if args.receipt {
            m = m.receipt(true);
        }
        for (k, v) in &args.headers {
            m = m.header(k.clone(), v.clone());
        }
        pending.push_back(client.send_nowait(m).await?);
        if pending.len() >= WINDOW
            && let Some(r) = pending.pop_front()
        {
            r.await?;
        }
    }
    for r in pending {
        r.await?;
    }
    // DISCONNECT's receipt comes after the broker has processed every
    // message sent before it.
    client.disconnect().await?;
    eprintln!(
        "sent {} message(s) to {} in {} ms",
        args.count,
        args.target.destination,
        started.elapsed().as_millis()
    );
    Ok(())
}
