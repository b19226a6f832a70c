//! The failover URI check (`halyard_client::BrokerUrl::parse`,
//! `Endpoint::parse`), shared by the `url` fuzzer and its AFL target.
//!
//! Invariants: no panic; a refusal has a message that quotes the URL;
//! every endpoint of a parsed URL (its brokers and its `priorityURIs`),
//! written with `Display`, parses back to the same broker (host and
//! port) over the same transport (TLS or not); a URL that parses as one endpoint parses as a one-broker
//! `BrokerUrl` with that endpoint; and each comma-separated part, parsed
//! as the client parses a CONNECTED `peers` header, does not panic either.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use halyard_client::url::UrlError;
use halyard_client::{BrokerUrl, Endpoint};

/// Checks one input (lossily decoded as UTF-8); `Ok` with a signature of
/// the outcome.
pub fn check_url(data: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(data);
    let mut h = DefaultHasher::new();
    match BrokerUrl::parse(&text) {
        Ok(url) => {
            if url.endpoints.is_empty() {
                return Err("a parsed URL has no endpoint".into());
            }
            let priority = url.failover.as_ref().map(|f| f.priority_uris.as_slice());
            for e in url.endpoints.iter().chain(priority.unwrap_or_default()) {
                round_trip(e)?;
            }
            ("ok", url.endpoints.len().min(4), url.failover.is_some()).hash(&mut h);
            url.login.is_some().hash(&mut h);
            priority.map(<[Endpoint]>::len).hash(&mut h);
        }
        Err(e) => {
            refusal(&text, &e)?;
            variant(&e).hash(&mut h);
        }
    }
    match Endpoint::parse(&text) {
        Ok(e) => {
            round_trip(&e)?;
            match BrokerUrl::parse(&text) {
                Ok(u) if u.endpoints == [e.clone()] && u.failover.is_none() => {}
                other => {
                    return Err(format!(
                        "Endpoint::parse gives {e:?} but BrokerUrl::parse gives {other:?}"
                    ));
                }
            }
            (e.login.is_some(), e.heartbeat.is_some()).hash(&mut h);
        }
        Err(e) => {
            refusal(&text, &e)?;
            variant(&e).hash(&mut h);
        }
    }
    for peer in text.split(',') {
        if let Ok(e) = Endpoint::parse(peer.trim()) {
            round_trip(&e)?;
        }
    }
    Ok(h.finish())
}

fn round_trip(e: &Endpoint) -> Result<(), String> {
    let written = e.to_string();
    match Endpoint::parse(&written) {
        Ok(back) if back.same_broker(e) && back.is_tls() == e.is_tls() => Ok(()),
        Ok(back) => Err(format!(
            "{e:?} is written {written:?}, which parses as another broker {back:?}"
        )),
        Err(err) => Err(format!(
            "{e:?} is written {written:?}, which does not parse: {err}"
        )),
    }
}

fn refusal(text: &str, e: &UrlError) -> Result<(), String> {
    let message = e.to_string();
    if e.url != text || !message.contains(text) || message.trim_end().ends_with(':') {
        return Err(format!(
            "refusal of {text:?} does not say what: {message:?}"
        ));
    }
    Ok(())
}

/// The problem's variant name, for the outcome signature.
fn variant(e: &UrlError) -> String {
    let d = format!("{:?}", e.reason);
    d.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Tokens of the URL syntax, for the mutator.
pub const URL_TOKENS: &[&[u8]] = &[
    b"failover:",
    b"failover:(",
    b")",
    b"(",
    b",",
    b"?",
    b"&",
    b"=",
    b":",
    b"://",
    b"stomp://",
    b"tcp://",
    b"ssl://",
    b"stomp+ssl://",
    b"trustCa=/ca.pem",
    b"clientCert=/c.pem&clientKey=/k.pem",
    b"verifyHostName=false",
    b"socket.verifyHostName=true",
    b"nested.trustCa=",
    b"@",
    b"[",
    b"]",
    b"[::1]",
    b"::",
    b"%",
    b"%41",
    b"%zz",
    b"%ff",
    b"/",
    b"#",
    b" ",
    b"localhost",
    b"127.0.0.1",
    b":61613",
    b":0",
    b":65536",
    b"nested.",
    b"login=",
    b"passcode=",
    b"heartbeat=1000,1000",
    b"heartbeat=1:2",
    b"connectTimeout=",
    b"initialReconnectDelay=",
    b"maxReconnectDelay=",
    b"useExponentialBackOff=",
    b"reconnectDelayExponent=",
    b"maxReconnectAttempts=",
    b"startupMaxReconnectAttempts=",
    b"randomize=false",
    b"timeout=-1",
    b"backup=true",
    b"backupPoolSize=",
    b"warnAfterReconnectAttempts=",
    b"priorityBackup=true",
    b"priorityURIs=",
    b"updateURIsSupported=",
    b"true",
    b"false",
    b"\xc3\xa9",
];

/// Seeds: every form the docs and tests use, and one broken URL per
/// error.
pub fn url_seeds() -> Vec<Vec<u8>> {
    [
        "stomp://localhost:61613",
        "tcp://h",
        "127.0.0.1:5",
        "h",
        "stomp://u:p%40ss@h:1234?heartbeat=100,200&connectTimeout=50",
        "stomp://[::1]:7",
        "[fe80::1%25eth0]:61613",
        "failover:(stomp://a:1,stomp://b:2)",
        "failover:stomp://a:1,tcp://b:2?randomize=false",
        "failover:(stomp://a:1?heartbeat=0,0,stomp://b:2)?initialReconnectDelay=5&maxReconnectDelay=200\
         &useExponentialBackOff=false&reconnectDelayExponent=1.5&maxReconnectAttempts=3\
         &startupMaxReconnectAttempts=0&randomize=false&timeout=250&backup=true&backupPoolSize=2\
         &warnAfterReconnectAttempts=0&priorityBackup=true&priorityURIs=stomp://b:2,stomp://a:1\
         &updateURIsSupported=false&login=me&passcode=se%26cret&nested.connectTimeout=300\
         &nested.heartbeat=500:500",
        "failover:(stomp://a:1)?randomize=yes",
        "failover:(stomp://a:1)?priorityURIs=stomp://b:0",
        "failover:()",
        "failover:",
        "failover:(stomp://a:1)x",
        "failover:(stomp://a:1,http://b:2)",
        "failover:(stomp://a:1,stomp://b:2",
        "failover:(stomp://a:1)?x=%zz",
        "failover:(stomp://a:1)?initialReconnectDelay=500&maxReconnectDelay=100",
        "stomp://h:0",
        "stomp://h:x",
        "stomp://:1",
        "stomp://h:1/path",
        "stomp://[::1",
        "stomp://[::1]x",
        "stomp://a:1?frob=1",
        "stomp:login=1]:5",
        "ssl://h:61612?trustCa=/etc/ca.pem&clientCert=/c.pem&clientKey=/k.pem&verifyHostName=false",
        "stomp+ssl://h:1?socket.verifyHostName=true",
        "failover:(ssl://a:1?trustCa=/mine.pem,stomp+ssl://b:2,stomp://c:3)?nested.trustCa=/ca.pem",
        "stomp://h:1?trustCa=/ca.pem",
        "ssl://h:1?clientCert=/c.pem",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
