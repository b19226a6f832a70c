//! `[openwire-options]`: how the OpenWire head (ActiveMQ's JMS clients) negotiates
//! its wire format and what it tells failover clients (docs/OPENWIRE.md).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[openwire-options]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct OpenWireConfig {
    /// OpenWire URLs of the other brokers of this master/slave group
    /// (`tcp://broker-b:61616`, `ssl://broker-b:61617`), sent to clients
    /// in `ConnectionControl.connectedBrokers` so that a `failover:` client
    /// that knew only one broker learns the others (ActiveMQ's
    /// `updateClusterClients`). The broker's own listener is not listed:
    /// the client knows it.
    pub peers: Vec<String>,
    /// Ask clients to reconnect elsewhere to spread load
    /// (`rebalanceClusterClients`). Off: in master/slave only one broker
    /// serves, so there is nothing to spread.
    pub rebalance_cluster_clients: bool,
    /// Offer tight encoding (smaller frames, a little more CPU); clients
    /// that want loose encoding get it either way.
    pub tight_encoding: bool,
    /// Offer the marshalling cache (repeated ids and destinations sent as
    /// a 2-byte index).
    pub cache_enabled: bool,
    /// Entries of the marshalling cache offered (the negotiated size is
    /// the smaller of ours and the client's).
    pub cache_size: u16,
    /// Largest frame accepted, in bytes; a larger one closes the
    /// connection with an error. 0: `limits.max-body-bytes` plus 64 KiB
    /// for the headers.
    pub max_frame_size: u64,
    /// The inactivity timeout offered, in ms: with it the client sends a
    /// `KeepAliveInfo` when it has nothing else to say, and a peer silent
    /// for longer is disconnected. The smaller of the broker's and the
    /// client's value wins; 0 turns it off.
    pub max_inactivity_ms: u64,
}

impl Default for OpenWireConfig {
    fn default() -> OpenWireConfig {
        OpenWireConfig {
            peers: Vec::new(),
            rebalance_cluster_clients: false,
            tight_encoding: true,
            cache_enabled: true,
            cache_size: 1024,
            max_frame_size: 0,
            // ActiveMQ's default.
            max_inactivity_ms: 30_000,
        }
    }
}

impl OpenWireConfig {
    /// Checks what can be checked before starting.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for url in &self.peers {
            check_peer(url).map_err(|problem| ConfigError::Invalid {
                key: "openwire-options.peers",
                message: format!(
                    "'{url}' {problem} (expected tcp://HOST:PORT, nio://HOST:PORT or ssl://HOST:PORT)"
                ),
            })?;
        }
        if self.cache_enabled && self.cache_size == 0 {
            return Err(ConfigError::Invalid {
                key: "openwire-options.cache-size",
                message: "must be greater than 0 while cache-enabled is on".into(),
            });
        }
        Ok(())
    }
}

/// A peer's URL is `tcp://`, `nio://` or `ssl://` with a host and a port:
/// the schemes an ActiveMQ client's failover transport connects to.
fn check_peer(url: &str) -> Result<(), &'static str> {
    let rest = ["tcp://", "nio://", "ssl://", "nio+ssl://"]
        .iter()
        .find_map(|s| url.strip_prefix(s))
        .ok_or("has no tcp://, nio:// or ssl:// scheme")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').ok_or("has no port")?;
    if host.is_empty() || host.contains(',') || host.contains(char::is_whitespace) {
        return Err("has no valid host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has no valid port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_must_be_openwire_urls() {
        for ok in ["tcp://b:61616", "ssl://[::1]:61617", "nio://b:1?x=y"] {
            assert_eq!(check_peer(ok), Ok(()), "{ok}");
        }
        for bad in [
            "stomp://b:61613",
            "tcp://b",
            "tcp://:1",
            "tcp://b:0",
            "tcp://a:1,tcp://b:2",
            "b:61616",
        ] {
            assert!(check_peer(bad).is_err(), "{bad}");
        }
    }
}
