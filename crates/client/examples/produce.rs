//! Sends persistent messages through whatever broker of the list is up,
//! each one confirmed (stored) before the next counts as sent.
//!
//! ```sh
//! cargo run -p halyard-client --example produce -- \
//!     'failover:(stomp://127.0.0.1:61613,stomp://127.0.0.1:61623)?randomize=false' 1000
//! ```
//!
//! Kill the master while it runs: the producer pauses, carries on with the
//! new master, and every message ends up in the queue exactly once.

use halyard_client::{Client, SendMessage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "stomp://127.0.0.1:61613".into());
    let count: u64 = args.next().map_or(Ok(100), |n| n.parse())?;
    let client = Client::connect(&url).await?;
    // Many sends in flight at once; each Receipt resolves when the broker
    // has stored the message (the new master's, after a failover).
    let mut pending = std::collections::VecDeque::new();
    for i in 0..count {
        let m = SendMessage::new("/queue/example", format!("message {i}")).persistent(true);
        pending.push_back(client.send_nowait(m).await?);
        if pending.len() >= 100
            && let Some(r) = pending.pop_front()
        {
            r.await?;
        }
    }
    for r in pending {
        r.await?;
    }
    println!("{count} messages stored");
    client.disconnect().await?;
    Ok(())
}
