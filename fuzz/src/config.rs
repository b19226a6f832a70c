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
    b"[tls]\n",
    b"[security]\n",
    b"[security.temporary]\n",
    b"[[security.users]]\n",
    b"[[security.authorization]]\n",
    b"name = \"u\"\n",
    b"password = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\"\n",
    b"groups = [\"admins\"]\n",
    b"certificate-subject = \"CN=x\"\n",
    b"read = [\"g\"]\n",
    b"write = []\n",
    b"admin = [\"g\"]\n",
    b"anonymous = \"read\"\n",
    b"client-auth = \"need\"\n",
    b"min-version = \"1.3\"\n",
    b"protocol = \"stomp+ssl\"\n",
    b"cert-file = \"/c.pem\"\n",
    b"key-file = \"/k.pem\"\n",
    b"http-tls = true\n",
];

/// The docs whose fenced blocks show config files.
const DOCS: &[&str] = &[
    include_str!("../../docs/CONFIGURATION.md"),
    include_str!("../../docs/SECURITY.md"),
    include_str!("../../docs/TLS.md"),
];

/// The fenced blocks of [`DOCS`] (TOML, and the `text` ones that show
/// TOML; the shell ones are seeds that fail to parse, which is fine).
fn doc_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in DOCS.iter().flat_map(|d| d.lines()) {
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
    seeds.push(every_section(&blocks));
    seeds.extend(blocks.into_iter().filter(|b| b.contains('=')));
    seeds.into_iter().map(String::into_bytes).collect()
}

/// The documented reference file with every section: `[[listeners]]`,
/// `[[policies]]`, `[[security.users]]` and `[[security.authorization]]`
/// tables in place of its empty arrays, `[security.temporary]`, TLS files
/// and HA peers.
pub fn every_section_seed() -> String {
    every_section(&doc_blocks())
}

fn every_section(blocks: &[String]) -> String {
    const DROPPED: &[&str] = &["listeners =", "policies =", "users =", "authorization ="];
    let mut every = String::new();
    for block in blocks {
        if block.contains("[store]") {
            for line in block.lines() {
                let line = line
                    .replace("# cert-file", "cert-file")
                    .replace("# key-file", "key-file")
                    .replace("# client-ca-file", "client-ca-file")
                    .replace("# anonymous", "anonymous");
                if !DROPPED.iter().any(|d| line.starts_with(d)) {
                    every.push_str(&line.replace("peers = []", "peers = [\"stomp://b:61613\"]"));
                    every.push('\n');
                }
            }
        }
    }
    let mut authorization_done = false;
    for block in blocks {
        if block.starts_with("[[listeners]]") || block.starts_with("[[policies]]") {
            every.push_str(block);
        }
        if block.starts_with("[[security.authorization]]") && !authorization_done {
            every.push_str(block);
            authorization_done = true;
        }
    }
    every.push_str(
        "[[security.users]]\nname = \"alice\"\n\
         password = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$O5Tt6j3pJj9QFkXhB3s8m3m0Yb8mJ1nKp6Z1Qe6mH7k\"\n\
         groups = [\"admins\", \"producers\"]\n\n\
         [[security.users]]\nname = \"bob\"\ncertificate-subject = \"CN=bob,O=Example\"\ngroups = [\"consumers\"]\n",
    );
    every
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The every-section seed is a valid config, so the fuzzer starts from
    /// every section on the path that validates and round-trips.
    #[test]
    fn the_every_section_seed_validates_and_round_trips() {
        let text = every_section_seed();
        let config: BrokerConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!config.security.users.is_empty() && !config.security.authorization.is_empty());
        assert!(config.listeners.len() >= 2 && !config.policies.is_empty());
        check_config(text.as_bytes()).unwrap();
        for seed in config_seeds() {
            check_config(&seed).unwrap();
        }
    }
}
