//! What `send`, `receive` and `bench` share about reaching a broker: the
//! connection itself (with a hint when it is refused), a line on standard
//! error for every completed failover, and the destination spellings they
//! accept.

use std::io::IsTerminal;

use anyhow::bail;
use halyard_client::{Client, ClientError, ConnectionEvent};

/// Connects, and prints every failover of the connection to standard error
/// (see [`report_failovers`]). `who` names the connection in those lines
/// when a command has several (bench); `None` for a command's only one.
pub(crate) async fn connect(url: &str, who: Option<&str>) -> anyhow::Result<Client> {
    match Client::connect(url).await {
        Ok(client) => {
            report_failovers(&client, who);
            Ok(client)
        }
        Err(e) => Err(refused_hint(e)),
    }
}

/// A refused connection most often means nothing listens there — or that
/// the broker there is a slave, whose client ports stay closed until it
/// becomes master (a newcomer pointing at the second broker of a pair
/// meets this first). Say so, and how to find out.
fn refused_hint(e: ClientError) -> anyhow::Error {
    const HINT: &str = "connection refused: maybe a slave (client ports stay closed until it becomes master): try `halyard status`";
    let refused = |t: &str| t.to_ascii_lowercase().contains("connection refused");
    match &e {
        ClientError::Connect { address, reason } if refused(reason) => {
            anyhow::anyhow!("cannot connect to {address}: {HINT}")
        }
        _ if refused(&e.to_string()) => anyhow::anyhow!("{e}; {HINT}"),
        _ => e.into(),
    }
}

/// Prints one line to standard error whenever the client's connection
/// fails over: where it resumed, after how long, how many sends it
/// replayed. Printed directly, not through `tracing`, so it shows under the
/// default `warn` log filter: a person watching a failover demo wants to
/// see it happen without knowing about `RUST_LOG`.
pub(crate) fn report_failovers(client: &Client, who: Option<&str>) {
    let mut events = client.events();
    let prefix = match who {
        Some(w) => format!("halyard: {w}: "),
        None => "halyard: ".to_owned(),
    };
    tokio::spawn(async move {
        // The broker left and why, from the `Interrupted` that comes first.
        let mut lost = String::new();
        let mut resumed = String::new();
        while let Some(e) = events.next().await {
            if let ConnectionEvent::Interrupted { .. } = &e
                && !resumed.is_empty()
            {
                say(&prefix, &resumed, None);
                resumed.clear();
            }
            match &e {
                ConnectionEvent::Interrupted { broker, reason } => {
                    lost = format!("lost {broker} ({reason}); ");
                }
                // One line per failover: held back while replayed sends
                // are confirmed, so it can say how many were duplicates.
                ConnectionEvent::Resumed { replayed, .. } => {
                    resumed = format!("{lost}{e}");
                    lost.clear();
                    if *replayed == 0 {
                        say(&prefix, &resumed, None);
                        resumed.clear();
                    }
                }
                ConnectionEvent::ReplayConfirmed { duplicates, .. } if !resumed.is_empty() => {
                    say(&prefix, &resumed, Some(*duplicates));
                    resumed.clear();
                }
                // Not printed: the same error ends the command and is
                // printed once, there.
                _ => {}
            }
        }
    });
}

/// Prints a failover's line, clearing a progress bar (bench) off it first.
fn say(prefix: &str, resumed: &str, duplicates: Option<u64>) {
    let clear = if std::io::stderr().is_terminal() {
        "\r\x1b[2K"
    } else {
        ""
    };
    match duplicates {
        Some(d) => eprintln!(
            "{clear}{prefix}{resumed}; {d} duplicate(s) suppressed (already stored before the failover)"
        ),
        None => eprintln!("{clear}{prefix}{resumed}"),
    }
}

/// Turns the destination spellings people bring with them into STOMP's:
/// `/queue/NAME` and `/topic/NAME` as they are, ActiveMQ's
/// `queue://NAME` and `topic://NAME` (from its JMS URIs and web console)
/// translated; a bare name is refused with the likely meaning, since the
/// broker would otherwise answer with an error about an unknown prefix.
pub(crate) fn destination(d: &str) -> anyhow::Result<String> {
    for (scheme, prefix) in [
        ("queue://", "/queue/"),
        ("topic://", "/topic/"),
        ("temp-queue://", "/temp-queue/"),
        ("temp-topic://", "/temp-topic/"),
    ] {
        if let Some(name) = strip_prefix_ignore_case(d, scheme) {
            if name.is_empty() {
                bail!("destination '{d}' has no name after '{scheme}'");
            }
            return Ok(format!("{prefix}{name}"));
        }
    }
    if d.starts_with('/') {
        return Ok(d.to_owned());
    }
    if d.is_empty() {
        bail!("the destination is empty: give /queue/NAME or /topic/NAME");
    }
    bail!(
        "destination '{d}' has no /queue/ or /topic/ prefix: did you mean /queue/{d} (or /topic/{d})?"
    )
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn activemq_spellings_become_stomp_ones() {
        assert_eq!(destination("queue://orders").unwrap(), "/queue/orders");
        assert_eq!(destination("topic://a.b").unwrap(), "/topic/a.b");
        assert_eq!(destination("QUEUE://x").unwrap(), "/queue/x");
        assert_eq!(destination("/queue/orders").unwrap(), "/queue/orders");
        let e = destination("orders").unwrap_err().to_string();
        assert!(e.contains("did you mean /queue/orders"), "{e}");
        assert!(destination("queue://").is_err());
        assert!(destination("").is_err());
    }
}
