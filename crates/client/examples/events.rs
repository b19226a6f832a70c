//! Prints the connection's events (as ActiveMQ's TransportListener would
//! report them) while sending one persistent message a second.
//!
//! ```sh
//! cargo run -p halyard-client --example events -- \
//!     'failover:(stomp://127.0.0.1:61613,stomp://127.0.0.1:61623)?maxReconnectAttempts=20'
//! ```

use std::time::Duration;

use halyard_client::{Client, ConnectionEvent, SendMessage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "stomp://127.0.0.1:61613".into());
    let client = Client::connect(&url).await?;
    println!("connected to {:?}", client.server().server);
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                ConnectionEvent::Interrupted { broker, reason } => {
                    println!("interrupted: lost {broker}: {reason}")
                }
                ConnectionEvent::Resumed {
                    broker,
                    after,
                    attempts,
                    replayed,
                    ..
                } => println!(
                    "resumed on {broker} after {after:?} ({attempts} pass(es)), {replayed} send(s) replayed"
                ),
                ConnectionEvent::Failed { reason } => println!("failed: {reason}"),
                other => println!("{other:?}"),
            }
        }
    });
    for i in 0u64.. {
        let m = SendMessage::new("/queue/example.events", format!("tick {i}")).persistent(true);
        client.send(m).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
