//! Edge cases: limits a peer cannot push past, negotiation refusals, version
//! gates, and encode failures that must leave the cache as it was.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use bytes::{BufMut, BytesMut};
use halyard_openwire::message::deflate;
use halyard_openwire::*;

fn format(tight: bool, cache: bool) -> Negotiated {
    Negotiated {
        version: 12,
        stack_trace_enabled: true,
        tcp_no_delay_enabled: true,
        cache_enabled: cache,
        cache_size: 128,
        tight_encoding_enabled: tight,
        size_prefix_disabled: false,
        max_frame_size: 1 << 20,
        max_inactivity_duration: 0,
        max_inactivity_duration_initial_delay: 0,
    }
}

#[test]
fn an_oversized_size_prefix_fails_before_the_body_arrives() {
    let mut c = Codec::with_format(format(true, true));
    let mut buf = BytesMut::new();
    buf.put_i32(i32::MAX);
    buf.put_u8(3);
    match c.decode(&mut buf) {
        Err(Error::FrameTooLarge { size, max }) => {
            assert_eq!((size, max), (i32::MAX as u64, 1 << 20));
        }
        other => panic!("{other:?}"),
    }
    assert!(buf.capacity() < 1 << 20, "buffered for the announced size");
}

#[test]
fn a_negative_size_prefix_is_malformed() {
    let mut c = Codec::new();
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe, 3][..]);
    assert!(matches!(c.decode(&mut buf), Err(Error::Malformed { .. })));
}

#[test]
fn without_size_prefix_an_endless_frame_hits_the_limit() {
    let mut fmt = format(false, false);
    fmt.size_prefix_disabled = true;
    fmt.max_frame_size = 1000;
    let mut c = Codec::with_format(fmt);
    // A ConnectionInfo whose client id claims 60000 bytes that never come.
    let mut buf = BytesMut::new();
    buf.put_u8(3);
    buf.put_i32(1);
    buf.put_u8(0);
    buf.put_u8(0); // null connection id
    buf.put_u8(1);
    buf.put_u16(60000);
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(&[b'x'; 1200]);
    assert!(matches!(
        c.decode(&mut buf),
        Err(Error::FrameTooLarge { .. })
    ));
}

#[test]
fn the_size_prefix_must_match_the_command() {
    let mut c = Codec::new();
    let mut buf = BytesMut::new();
    c.encode(&Command::KeepAliveInfo(KeepAliveInfo::default()), &mut buf)
        .unwrap();
    buf[3] += 1;
    buf.put_u8(0);
    assert!(matches!(c.decode(&mut buf), Err(Error::Malformed { .. })));
}

#[test]
fn old_versions_and_strangers_are_refused() {
    let ours = WireFormatOptions::default();
    let old = WireFormatOptions {
        version: 8,
        ..WireFormatOptions::default()
    };
    assert!(matches!(
        negotiate(&ours, &old),
        Err(Error::UnsupportedVersion(8))
    ));
    let mut info = ours.to_info().unwrap();
    info.magic = *b"ActiveMX";
    assert!(matches!(
        WireFormatOptions::from_info(&info),
        Err(Error::BadMagic)
    ));
}

#[test]
fn negotiation_takes_the_lower_and_the_common() {
    let ours = WireFormatOptions::default();
    let theirs = WireFormatOptions {
        version: 10,
        tight_encoding_enabled: false,
        cache_size: 512,
        max_frame_size: 0,
        max_inactivity_duration: 60_000,
        ..WireFormatOptions::default()
    };
    let n = negotiate(&ours, &theirs).unwrap();
    assert_eq!(n.version, 10);
    assert!(!n.tight_encoding_enabled && n.cache_enabled && n.stack_trace_enabled);
    assert_eq!(n.cache_size, 512);
    assert_eq!(n.max_frame_size, DEFAULT_MAX_FRAME_SIZE);
    assert_eq!(n.max_inactivity_duration, 30_000);
    let round = WireFormatOptions::from_info(&theirs.to_info().unwrap()).unwrap();
    assert_eq!(round, theirs);
}

#[test]
fn a_cache_index_outside_the_table_is_malformed() {
    let mut c = Codec::with_format(format(false, true));
    let mut body = BytesMut::new();
    body.put_u8(SessionInfo::DATA_STRUCTURE_TYPE);
    body.put_i32(1);
    body.put_u8(0);
    body.put_u8(0); // a reference to an existing entry...
    body.put_i16(5000); // ...that cannot exist
    let mut buf = BytesMut::new();
    buf.put_i32(body.len() as i32);
    buf.extend_from_slice(&body);
    match c.decode(&mut buf) {
        Err(Error::Malformed { at, .. }) => assert_eq!(at, "SessionInfo.session_id"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_decompression_bomb_is_an_error() {
    let mut m = Message {
        kind: MessageKind::Bytes,
        ..Message::default()
    };
    m.set_body(Some(vec![0u8; 8 << 20].into()));
    m.compress();
    assert!(m.content.as_ref().unwrap().len() < 64 << 10);
    assert!(matches!(
        m.body_with_limit(1 << 20),
        Err(Error::InflatedTooLarge { .. })
    ));
    assert_eq!(m.body().unwrap().unwrap().len(), 8 << 20);
    let junk = Message {
        content: Some(deflate(b"x").slice(..3)),
        compressed: true,
        ..Message::default()
    };
    assert!(junk.body().is_err());
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for tight in [false, true] {
        let mut m = Message::default();
        for _ in 0..40 {
            m = Message {
                data_structure: Some(Box::new(Command::Message(m))),
                ..Message::default()
            };
        }
        let fmt = format(tight, true);
        let mut buf = BytesMut::new();
        Codec::with_format(fmt.clone())
            .encode(&Command::Message(m), &mut buf)
            .unwrap();
        let err = Codec::with_format(fmt).decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }
}

#[test]
fn version_9_leaves_out_the_later_fields() {
    let id = MessageId {
        text_view: Some("ID:text".into()),
        producer_sequence_id: 3,
        ..MessageId::default()
    };
    let mut fmt = format(false, false);
    fmt.version = 9;
    let mut v9 = BytesMut::new();
    Codec::with_format(fmt.clone())
        .encode(&Command::MessageId(id.clone()), &mut v9)
        .unwrap();
    let mut v12 = BytesMut::new();
    Codec::with_format(format(false, false))
        .encode(&Command::MessageId(id.clone()), &mut v12)
        .unwrap();
    assert_eq!(v12.len() - v9.len(), 1 + 2 + "ID:text".len());
    let got = Codec::with_format(fmt).decode(&mut v9).unwrap().unwrap();
    assert_eq!(
        got,
        Command::MessageId(MessageId {
            text_view: None,
            ..id
        })
    );
}

#[test]
fn broker_subscription_info_needs_version_12() {
    let mut fmt = format(true, false);
    fmt.version = 11;
    let cmd = Command::BrokerSubscriptionInfo(BrokerSubscriptionInfo::default());
    let err = Codec::with_format(fmt)
        .encode(&cmd, &mut BytesMut::new())
        .unwrap_err();
    assert!(matches!(err, Error::UnknownCommand(92)));
}

#[test]
fn a_failed_encode_leaves_the_cache_as_it_was() {
    for tight in [false, true] {
        let fmt = format(tight, true);
        let mut enc = Codec::with_format(fmt.clone());
        let mut dec = Codec::with_format(fmt);
        let conn = ConnectionId {
            value: Some("ID:c".into()),
        };
        let too_long = ConnectionInfo {
            connection_id: Some(conn.clone()),
            client_id: Some("\u{e9}".repeat(40_000)),
            ..ConnectionInfo::default()
        };
        let mut wire = BytesMut::new();
        assert!(matches!(
            enc.encode(&Command::ConnectionInfo(too_long), &mut wire),
            Err(Error::Unencodable { .. })
        ));
        assert!(wire.is_empty());
        let ok = Command::ConnectionInfo(ConnectionInfo {
            connection_id: Some(conn),
            ..ConnectionInfo::default()
        });
        enc.encode(&ok, &mut wire).unwrap();
        assert_eq!(dec.decode(&mut wire).unwrap(), Some(ok));
    }
}

#[test]
fn without_stack_traces_only_class_and_message_travel() {
    let mut fmt = format(true, false);
    fmt.stack_trace_enabled = false;
    let mut t = Throwable::new("java.lang.Exception", "outer");
    t.stack_trace.push(StackTraceElement {
        line_number: 7,
        ..StackTraceElement::default()
    });
    t.cause = Some(Box::new(Throwable::new("java.lang.Error", "inner")));
    let cmd = Command::ExceptionResponse(ExceptionResponse {
        exception: Some(t),
        ..ExceptionResponse::default()
    });
    let mut buf = BytesMut::new();
    Codec::with_format(fmt.clone())
        .encode(&cmd, &mut buf)
        .unwrap();
    let got = Codec::with_format(fmt).decode(&mut buf).unwrap().unwrap();
    let Command::ExceptionResponse(r) = got else {
        panic!()
    };
    assert_eq!(
        r.exception,
        Some(Throwable::new("java.lang.Exception", "outer"))
    );
}

#[test]
fn null_frames_are_skipped() {
    let mut c = Codec::new();
    let mut buf = BytesMut::from(&[0, 0, 0, 1, 0][..]);
    c.encode(&Command::ShutdownInfo(ShutdownInfo::default()), &mut buf)
        .unwrap();
    assert!(matches!(
        c.decode(&mut buf),
        Ok(Some(Command::ShutdownInfo(_)))
    ));
    assert!(buf.is_empty());
}

#[test]
fn text_and_map_bodies_round_trip() {
    let mut m = Message {
        kind: MessageKind::Text,
        ..Message::default()
    };
    let text = "a\u{0}b \u{1d11e} ".repeat(3000);
    m.set_text(Some(&text)).unwrap();
    assert_eq!(m.text().unwrap().as_deref(), Some(text.as_str()));
    m.compress();
    assert_eq!(m.text().unwrap().as_deref(), Some(text.as_str()));
    let mut map = Map::new();
    map.insert("k", Value::String("x".repeat(9000)));
    map.insert("n", Value::List(vec![Value::Null, Value::Char(0xd834)]));
    m.set_map_body(Some(&map)).unwrap();
    assert_eq!(m.map_body().unwrap(), Some(map.clone()));
    m.set_properties(&map).unwrap();
    assert_eq!(m.properties().unwrap(), map);
}
