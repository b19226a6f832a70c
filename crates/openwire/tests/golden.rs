//! Frames marshalled by ActiveMQ's Java OpenWireFormat (tests/golden/*.hex,
//! see the README there) decode to the expected commands and re-encode to
//! the same bytes, in all four tight/loose x cache on/off formats.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use halyard_openwire::{
    Codec, Command, DestinationKind, MessageKind, Negotiated, TransactionId, Value,
    WireFormatOptions, negotiate,
};

fn frames(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(' ').expect("name and hex");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (name.to_owned(), bytes)
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn format(tight: bool, cache: bool) -> Negotiated {
    Negotiated {
        version: 12,
        stack_trace_enabled: true,
        tcp_no_delay_enabled: true,
        cache_enabled: cache,
        cache_size: 0,
        tight_encoding_enabled: tight,
        size_prefix_disabled: false,
        max_frame_size: u64::MAX,
        max_inactivity_duration: 30_000,
        max_inactivity_duration_initial_delay: 10_000,
    }
}

const TEXT: &str = "h\u{e9}llo w\u{f6}rld \u{2713} \u{1d11e} and a NUL \0 end";

fn check(name: &str, cmd: &Command) {
    match (name, cmd) {
        ("connection_info", Command::ConnectionInfo(c)) => {
            assert_eq!(c.user_name.as_deref(), Some("user"));
            assert_eq!(c.password.as_deref(), Some("secret"));
            assert_eq!(c.client_id.as_deref(), Some("golden-client"));
            assert!(c.manageable && c.response_required);
            assert_eq!(c.command_id, 1);
            let id = c.connection_id.as_ref().and_then(|c| c.value.as_deref());
            assert_eq!(id, Some("ID:golden-host-40123-1700000000000-0:1"));
        }
        ("message_dispatch", Command::MessageDispatch(d)) => {
            assert_eq!(d.redelivery_counter, 2);
            let m = d.message.clone().expect("dispatched message");
            check("text_message", &Command::Message(m));
        }
        ("text_message", Command::Message(m)) => {
            assert_eq!(m.kind, MessageKind::Text);
            assert_eq!(m.text().unwrap().as_deref(), Some(TEXT));
            let p = m.properties().unwrap();
            assert_eq!(p.get("color"), Some(&Value::String("blue".into())));
            assert_eq!(p.get("n"), Some(&Value::Int(42)));
            assert_eq!(p.get("big"), Some(&Value::Long(1 << 40)));
            assert_eq!(p.get("flag"), Some(&Value::Bool(true)));
            assert_eq!(p.get("pi"), Some(&Value::Double(3.25)));
            assert_eq!(p.get("b"), Some(&Value::Byte(-3)));
            assert_eq!(p.get("s"), Some(&Value::Short(300)));
            assert_eq!(p.get("f"), Some(&Value::Float(1.5)));
            assert_eq!(m.timestamp, 1_700_000_000_000);
            assert!(m.persistent);
            assert_eq!(m.priority, 4);
            assert_eq!(m.jms_type.as_deref(), Some("golden"));
            let reply = m.reply_to.as_ref().expect("reply to");
            assert_eq!(
                (reply.kind, reply.physical_name.as_str()),
                (DestinationKind::Topic, "replies")
            );
            let id = m.message_id.as_ref().expect("message id");
            assert_eq!(id.producer_sequence_id, 1);
            assert_eq!(id.producer_id.as_ref().map(|p| p.value), Some(1));
        }
        ("message_ack", Command::MessageAck(a)) => {
            assert_eq!(a.ack_type, 2);
            assert_eq!(a.message_count, 1);
            assert_eq!(a.first_message_id, a.last_message_id);
            match &a.transaction_id {
                Some(TransactionId::Local(t)) => assert_eq!(t.value, 7),
                other => panic!("transaction id {other:?}"),
            }
        }
        ("exception_response", Command::ExceptionResponse(r)) => {
            assert_eq!(r.correlation_id, 6);
            let e = r.exception.as_ref().expect("exception");
            assert_eq!(e.class_name.as_deref(), Some("java.io.IOException"));
            assert_eq!(e.message.as_deref(), Some("boom \u{2713}"));
            assert_eq!(e.stack_trace.len(), 2);
            assert_eq!(e.stack_trace[0].line_number, 42);
            assert_eq!(e.stack_trace[1].file_name, None);
            let cause = e.cause.as_ref().expect("cause");
            assert_eq!(
                cause.class_name.as_deref(),
                Some("java.lang.IllegalStateException")
            );
        }
        ("compressed_text_message", Command::Message(m)) => {
            assert!(m.compressed);
            assert_eq!(m.text().unwrap(), Some("compressed text ".repeat(50)));
        }
        ("map_message", Command::Message(m)) => {
            assert_eq!(m.kind, MessageKind::Map);
            let body = m.map_body().unwrap().expect("map body");
            assert_eq!(body.get("a"), Some(&Value::String("x".into())));
            assert_eq!(body.get("b"), Some(&Value::Int(1)));
        }
        ("bytes_message", Command::Message(m)) => {
            assert_eq!(m.kind, MessageKind::Bytes);
            assert_eq!(m.body().unwrap().as_deref(), Some(&[0u8, 1, 2, 0xff][..]));
            assert_eq!(m.expiration, -1);
            let d = m.destination.as_ref().expect("destination");
            assert_eq!(d.kind, DestinationKind::TempQueue);
        }
        ("remove_info", Command::RemoveInfo(r)) => {
            assert_eq!(r.last_delivered_sequence_id, 5);
            assert!(matches!(
                r.object_id.as_deref(),
                Some(Command::ConsumerId(_))
            ));
        }
        ("session_info", Command::SessionInfo(_))
        | ("producer_info", Command::ProducerInfo(_))
        | ("consumer_info", Command::ConsumerInfo(_))
        | ("response", Command::Response(_))
        | ("keep_alive", Command::KeepAliveInfo(_))
        | ("shutdown", Command::ShutdownInfo(_)) => {}
        (name, cmd) => panic!("{name} decoded as {cmd:?}"),
    }
}

fn run(file: &str, text: &str, tight: bool, cache: bool) {
    let mut dec = Codec::with_format(format(tight, cache));
    let mut enc = Codec::with_format(format(tight, cache));
    for (name, bytes) in frames(text) {
        let mut buf = BytesMut::from(&bytes[..]);
        let cmd = dec
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{file} {name}: {e}"))
            .unwrap_or_else(|| panic!("{file} {name}: incomplete"));
        assert!(buf.is_empty(), "{file} {name}: bytes left over");
        check(&name, &cmd);
        let mut out = BytesMut::new();
        enc.encode(&cmd, &mut out)
            .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
        assert_eq!(
            hex(&out),
            hex(&bytes),
            "{file} {name}: re-encoded bytes differ"
        );
    }
}

#[test]
fn loose_without_cache() {
    run(
        "loose-nocache",
        include_str!("golden/loose-nocache.hex"),
        false,
        false,
    );
}

#[test]
fn loose_with_cache() {
    run(
        "loose-cache",
        include_str!("golden/loose-cache.hex"),
        false,
        true,
    );
}

#[test]
fn tight_without_cache() {
    run(
        "tight-nocache",
        include_str!("golden/tight-nocache.hex"),
        true,
        false,
    );
}

#[test]
fn tight_with_cache() {
    run(
        "tight-cache",
        include_str!("golden/tight-cache.hex"),
        true,
        true,
    );
}

#[test]
fn java_wire_format_info_negotiates() {
    let (_, bytes) = frames(include_str!("golden/wireformat.hex")).remove(0);
    let mut codec = Codec::new();
    let mut buf = BytesMut::from(&bytes[..]);
    let cmd = codec.decode(&mut buf).unwrap().expect("a frame");
    let Command::WireFormatInfo(info) = &cmd else {
        panic!("{cmd:?}")
    };
    let theirs = WireFormatOptions::from_info(info).unwrap();
    assert_eq!(theirs.version, 12);
    assert!(theirs.tight_encoding_enabled && theirs.cache_enabled && theirs.stack_trace_enabled);
    assert_eq!(theirs.cache_size, 1024);
    assert_eq!(theirs.max_inactivity_duration, 30_000);
    assert_eq!(theirs.max_frame_size, i64::MAX);
    assert_eq!(theirs.platform_details.as_deref(), Some("golden"));
    let n = negotiate(&WireFormatOptions::default(), &theirs).unwrap();
    assert_eq!(n.version, 12);
    assert!(n.tight_encoding_enabled && n.cache_enabled);
    assert_eq!(n.cache_size, 1024);
    assert_eq!(n.max_frame_size, halyard_openwire::DEFAULT_MAX_FRAME_SIZE);
    let mut out = BytesMut::new();
    codec.encode(&cmd, &mut out).unwrap();
    assert_eq!(hex(&out), hex(&bytes));
}
