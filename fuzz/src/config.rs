//! The broker config check (`toml::from_str::<BrokerConfig>`, then
//! `BrokerConfig::validate`, as `halyard broker --config` loads a file),
//! shared by the `config` fuzzer and its AFL target.
//!
//! Invariants: no panic; every refusal (TOML or validation) has a
//! message; a config that validates serialises with `toml`, parses back
//! equal and validates again, and the settings the broker derives from it
//! at start (`listeners`, `frame_limits`, `duplicate_bounds`) do not
//! panic.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use halyard_broker::config::BrokerConfig;

/// Checks one input (lossily decoded as UTF-8); `Ok` with a signature of
/// the outcome.
pub fn check_config(data: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(data);
    let mut h = DefaultHasher::new();
    let config = match toml::from_str::<BrokerConfig>(&text) {
        Ok(c) => c,
        Err(e) => {
            let message = e.message();
            if message.trim().is_empty() {
                return Err(format!("a TOML refusal without a message: {e:?}"));
            }
            // The first words say which kind of mistake it was.
            ("toml", first_words(message)).hash(&mut h);
            return Ok(h.finish());
        }
    };
    if let Err(e) = config.validate() {
        let message = e.to_string();
        if message.trim().is_empty() || message.trim_end().ends_with(':') {
            return Err(format!("a validation refusal without a message: {e:?}"));
        }
        ("invalid", first_words(&message)).hash(&mut h);
        return Ok(h.finish());
    }
    let _ = (
        config.listeners(),
        config.frame_limits(),
        config.duplicate_bounds(),
    );
    let written = toml::to_string(&config)
        .map_err(|e| format!("a valid config does not serialise: {e}\n{config:?}"))?;
    let back: BrokerConfig = toml::from_str(&written)
        .map_err(|e| format!("a valid config, written, does not parse: {e}\n{written}"))?;
    if back != config {
        return Err(format!(
            "a valid config, written and parsed, changed:\n{config:?}\n{back:?}\nwritten:\n{written}"
        ));
    }
    back.validate()
        .map_err(|e| format!("a valid config, written and parsed, is invalid: {e}\n{written}"))?;
    (
        "valid",
        config.listeners.len().min(3),
        config.policies.len().min(3),
        config.ha.peers.len().min(2),
    )
        .hash(&mut h);
    Ok(h.finish())
}

fn first_words(message: &str) -> String {
    message
        .split(|c: char| !c.is_alphanumeric() && c != '-' && c != ' ')
        .next()
        .unwrap_or_default()
        .chars()
        .take(40)
        .collect()
}

/// Tokens of TOML and of the config's keys and values, for the mutator.
pub const CONFIG_TOKENS: &[&[u8]] = &[
    b"\n",
    b" = ",
    b"=",
    b"\"",
    b"'",
    b"\"\"\"",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b",",
    b".",
    b"#",
    b"\\u0000",
    b"\\",
    b"true",
    b"false",
    b"\"auto\"",
    b"-1",
    b"0",
    b"0.0",
    b"nan",
    b"inf",
    b"-inf",
    b"1979-05-27T07:32:00Z",
    b"[store]\n",
    b"[journal]\n",
    b"[limits]\n",
    b"[timeouts]\n",
    b"[heartbeat]\n",
    b"[destinations]\n",
    b"[ha]\n",
    b"[clients]\n",
    b"[selectors]\n",
    b"[scheduler]\n",
    b"[[listeners]]\n",
    b"[[policies]]\n",
    b"protocol = \"stomp\"\n",
    b"address = \"127.0.0.1:61613\"\n",
    b"queue = \"orders.>\"\n",
    b"topic = \"prices.*\"\n",
    b"peers = [\"stomp://b:61613\"]\n",
    b"kind = \"postgres\"\n",
    b"url = \"postgres://u@h/db\"\n",
    b"sync = \"batch-ms 5\"\n",
    b"max-body-bytes = ",
    b"max-connections = ",
    b"memory-bytes = ",
    b"grace-factor = ",
    b"backoff-multiplier = ",
    b"time-zone = \"utc\"\n",
    b"slow-subscriber = \"drop-oldest\"\n",
    b"dead-letter-strategy = \"shared\"\n",
];

const CONFIGURATION_MD: &str = include_str!("../../docs/CONFIGURATION.md");

/// The fenced blocks of docs/CONFIGURATION.md (TOML and the `text` ones
/// that show TOML).
fn doc_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in CONFIGURATION_MD.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
        } else if let Some(block) = &mut current {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Seeds: every example config in the repository, the documented one with
/// every section, and the defaults as `toml` writes them.
pub fn config_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<String> = vec![
        include_str!("../../bench/halyard.toml").to_owned(),
        include_str!("../../bench/halyard-postgres.toml").to_owned(),
        include_str!("../../tests/activemq/halyard-features.toml").to_owned(),
        toml::to_string(&BrokerConfig::default()).unwrap_or_default(),
        String::new(),
    ];
    let blocks = doc_blocks();
    // The documented file with every section, [[listeners]] and
    // [[policies]] tables in place of its empty arrays, and HA peers.
    let mut every = String::new();
    for block in &blocks {
        if block.contains("[store]") {
            for line in block.lines() {
                if !line.starts_with("listeners =") && !line.starts_with("policies =") {
                    every.push_str(&line.replace("peers = []", "peers = [\"stomp://b:61613\"]"));
                    every.push('\n');
                }
            }
        }
    }
    for block in &blocks {
        if block.starts_with("[[listeners]]") || block.starts_with("[[policies]]") {
            every.push_str(block);
        }
    }
    seeds.push(every);
    seeds.extend(blocks.into_iter().filter(|b| b.contains('=')));
    seeds.into_iter().map(String::into_bytes).collect()
}
