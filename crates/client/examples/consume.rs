//! Receives and acknowledges messages until none comes for five seconds,
//! flagging the ones a failover made the broker deliver again.
//!
//! ```sh
//! cargo run -p halyard-client --example consume -- \
//!     'failover:(stomp://127.0.0.1:61613,stomp://127.0.0.1:61623)'
//! ```

use std::time::Duration;

use halyard_client::{AckMode, Client, ClientError, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "stomp://127.0.0.1:61613".into());
    let client = Client::connect(&url).await?;
    let options = SubscribeOptions::default()
        .ack(AckMode::ClientIndividual)
        .prefetch(100);
    let mut sub = client.subscribe("/queue/example", options).await?;
    let (mut received, mut again) = (0u64, 0u64);
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        received += 1;
        if m.redelivered() {
            // Possibly processed before the failover: this is where an
            // application that must not act twice checks.
            again += 1;
        }
        match client.ack(&m).await {
            // Delivered by the broker that failed: it comes again.
            Ok(()) | Err(ClientError::AckNotConfirmed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    println!("{received} messages received, {again} of them redelivered");
    client.disconnect().await?;
    Ok(())
}
