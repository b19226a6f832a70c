//! Property tests: every command survives encode/decode in every format
//! (tight/loose, cache on/off, size prefix on/off) across a sequence of
//! frames fed in arbitrary chunks (the cache state carries over, and an
//! incomplete frame must not disturb it); arbitrary bytes never panic the
//! decoder.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use halyard_openwire::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9:._-]{0,24}",
        "[a-z\u{0}\u{e9}\u{2713}\u{1d11e} ]{0,12}",
    ]
}

fn ostr() -> impl Strategy<Value = Option<String>> {
    of(text())
}

fn obytes() -> impl Strategy<Value = Option<Bytes>> {
    of(vec(any::<u8>(), 0..24).prop_map(Bytes::from))
}

fn connection_id() -> impl Strategy<Value = ConnectionId> {
    // Few distinct values, so that the cache sees repeats.
    prop_oneof![Just("ID:a:1"), Just("ID:b:2"), Just("c")].prop_map(|v| ConnectionId {
        value: Some(v.to_owned()),
    })
}

fn session_id() -> impl Strategy<Value = SessionId> {
    (ostr(), 0i64..3).prop_map(|(connection_id, value)| SessionId {
        connection_id,
        value,
    })
}

fn consumer_id() -> impl Strategy<Value = ConsumerId> {
    (ostr(), any::<i64>(), 0i64..3).prop_map(|(connection_id, session_id, value)| ConsumerId {
        connection_id,
        session_id,
        value,
    })
}

fn producer_id() -> impl Strategy<Value = ProducerId> {
    (
        of(Just("ID:p".to_owned())),
        0i64..3,
        prop_oneof![Just(0i64), Just(70_000), Just(-1), Just(1 << 40)],
    )
        .prop_map(|(connection_id, value, session_id)| ProducerId {
            connection_id,
            value,
            session_id,
        })
}

fn broker_id() -> impl Strategy<Value = BrokerId> {
    ostr().prop_map(|value| BrokerId { value })
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        prop_oneof![
            Just(DestinationKind::Queue),
            Just(DestinationKind::Topic),
            Just(DestinationKind::TempQueue),
            Just(DestinationKind::TempTopic)
        ],
        prop_oneof![Just("orders".to_owned()), text()],
    )
        .prop_map(|(kind, physical_name)| Destination {
            kind,
            physical_name,
        })
}

fn message_id() -> impl Strategy<Value = MessageId> {
    (ostr(), of(producer_id()), any::<i64>(), any::<i64>()).prop_map(
        |(text_view, producer_id, producer_sequence_id, broker_sequence_id)| MessageId {
            text_view,
            producer_id,
            producer_sequence_id,
            broker_sequence_id,
        },
    )
}

fn transaction_id() -> impl Strategy<Value = TransactionId> {
    prop_oneof![
        (any::<i64>(), of(connection_id())).prop_map(|(value, connection_id)| {
            TransactionId::Local(LocalTransactionId {
                value,
                connection_id,
            })
        }),
        (any::<i32>(), obytes(), obytes()).prop_map(|(format_id, g, b)| {
            TransactionId::Xa(XaTransactionId {
                format_id,
                global_transaction_id: g,
                branch_qualifier: b,
            })
        }),
    ]
}

fn throwable() -> impl Strategy<Value = Throwable> {
    let element =
        (ostr(), ostr(), ostr(), any::<i32>()).prop_map(|(c, m, f, l)| StackTraceElement {
            class_name: c,
            method_name: m,
            file_name: f,
            line_number: l,
        });
    let leaf = (ostr(), ostr(), vec(element, 0..3)).prop_map(|(c, m, st)| Throwable {
        class_name: c,
        message: m,
        stack_trace: st,
        cause: None,
    });
    leaf.prop_recursive(2, 4, 1, |inner| {
        (inner.clone(), of(inner)).prop_map(|(mut t, cause)| {
            t.cause = cause.map(Box::new);
            t
        })
    })
}

fn id_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        connection_id().prop_map(Command::ConnectionId),
        session_id().prop_map(Command::SessionId),
        consumer_id().prop_map(Command::ConsumerId),
        producer_id().prop_map(Command::ProducerId),
        destination().prop_map(Command::Destination),
    ]
}

fn base() -> impl Strategy<Value = (i32, bool)> {
    (any::<i32>(), any::<bool>())
}

fn message() -> BoxedStrategy<Message> {
    let kind = prop_oneof![
        Just(MessageKind::Plain),
        Just(MessageKind::Bytes),
        Just(MessageKind::Map),
        Just(MessageKind::Object),
        Just(MessageKind::Stream),
        Just(MessageKind::Text),
        Just(MessageKind::Blob),
    ];
    let a = (
        kind,
        base(),
        of(producer_id()),
        of(destination()),
        of(transaction_id()),
        of(destination()),
        of(message_id()),
        of(transaction_id()),
        ostr(),
        any::<i32>(),
        ostr(),
        any::<bool>(),
    );
    let b = (
        any::<i64>(),
        any::<u8>(),
        of(destination()),
        any::<i64>(),
        ostr(),
        obytes(),
        obytes(),
        of(id_command()),
        of(consumer_id()),
        any::<bool>(),
        any::<i32>(),
        of(vec(broker_id(), 0..3)),
    );
    let c = (
        any::<i64>(),
        ostr(),
        any::<[bool; 4]>(),
        of(vec(broker_id(), 0..2)),
        any::<i64>(),
        any::<i64>(),
        ostr(),
        ostr(),
    );
    (a, b, c)
        .prop_map(|(a, b, c)| {
            let blob = a.0 == MessageKind::Blob;
            Message {
                kind: a.0,
                command_id: a.1.0,
                response_required: a.1.1,
                producer_id: a.2,
                destination: a.3,
                transaction_id: a.4,
                original_destination: a.5,
                message_id: a.6,
                original_transaction_id: a.7,
                group_id: a.8,
                group_sequence: a.9,
                correlation_id: a.10,
                persistent: a.11,
                expiration: b.0,
                priority: b.1,
                reply_to: b.2,
                timestamp: b.3,
                jms_type: b.4,
                content: b.5,
                marshalled_properties: b.6,
                data_structure: b.7.map(Box::new),
                target_consumer_id: b.8,
                compressed: b.9,
                redelivery_counter: b.10,
                broker_path: b.11,
                arrival: c.0,
                user_id: c.1,
                received_by_df_bridge: c.2[0],
                droppable: c.2[1],
                cluster: c.3,
                broker_in_time: c.4,
                broker_out_time: c.5,
                jmsx_group_first_for_consumer: c.2[2],
                remote_blob_url: if blob { c.6 } else { None },
                mime_type: if blob { c.7 } else { None },
                deleted_by_broker: blob && c.2[3],
            }
        })
        .boxed()
}

// Boxed: the unboxed value tree of this union is so large that building
// it overflows a test thread's stack.
fn command() -> BoxedStrategy<Command> {
    let infos = prop_oneof![
        (
            base(),
            of(connection_id()),
            ostr(),
            ostr(),
            ostr(),
            of(vec(broker_id(), 0..3)),
            any::<[bool; 5]>(),
            ostr()
        )
            .prop_map(
                |(b, id, client, pw, user, path, f, ip)| Command::ConnectionInfo(ConnectionInfo {
                    command_id: b.0,
                    response_required: b.1,
                    connection_id: id,
                    client_id: client,
                    password: pw,
                    user_name: user,
                    broker_path: path,
                    broker_master_connector: f[0],
                    manageable: f[1],
                    client_master: f[2],
                    fault_tolerant: f[3],
                    failover_reconnect: f[4],
                    client_ip: ip,
                })
            ),
        (base(), of(session_id())).prop_map(|(b, id)| Command::SessionInfo(SessionInfo {
            command_id: b.0,
            response_required: b.1,
            session_id: id,
        })),
        (
            base(),
            of(consumer_id()),
            of(destination()),
            any::<[i32; 2]>(),
            any::<[bool; 8]>(),
            [ostr(), ostr(), ostr()],
            any::<u8>(),
            of(vec(consumer_id(), 0..2))
        )
            .prop_map(|(b, id, d, n, f, s, prio, path)| {
                let [selector, client_id, subscription_name] = s;
                Command::ConsumerInfo(ConsumerInfo {
                    command_id: b.0,
                    response_required: b.1,
                    consumer_id: id,
                    browser: f[0],
                    destination: d,
                    prefetch_size: n[0],
                    maximum_pending_message_limit: n[1],
                    dispatch_async: f[1],
                    selector,
                    client_id,
                    subscription_name,
                    no_local: f[2],
                    exclusive: f[3],
                    retroactive: f[4],
                    priority: prio,
                    broker_path: None,
                    additional_predicate: None,
                    network_subscription: f[5],
                    optimized_acknowledge: f[6],
                    no_range_acks: f[7],
                    network_consumer_path: path,
                })
            }),
        (
            base(),
            of(producer_id()),
            of(destination()),
            any::<bool>(),
            any::<i32>()
        )
            .prop_map(|(b, id, d, a, w)| {
                Command::ProducerInfo(ProducerInfo {
                    command_id: b.0,
                    response_required: b.1,
                    producer_id: id,
                    destination: d,
                    broker_path: None,
                    dispatch_async: a,
                    window_size: w,
                })
            }),
        (
            base(),
            of(connection_id()),
            of(transaction_id()),
            any::<u8>()
        )
            .prop_map(|(b, c, t, ty)| {
                Command::TransactionInfo(TransactionInfo {
                    command_id: b.0,
                    response_required: b.1,
                    connection_id: c,
                    transaction_id: t,
                    transaction_type: ty,
                })
            }),
        (
            base(),
            of(connection_id()),
            of(destination()),
            any::<u8>(),
            any::<i64>()
        )
            .prop_map(|(b, c, d, o, t)| {
                Command::DestinationInfo(DestinationInfo {
                    command_id: b.0,
                    response_required: b.1,
                    connection_id: c,
                    destination: d,
                    operation_type: o,
                    timeout: t,
                    broker_path: Some(vec![]),
                })
            }),
        (base(), of(connection_id()), ostr(), ostr()).prop_map(|(b, c, s, id)| {
            Command::RemoveSubscriptionInfo(RemoveSubscriptionInfo {
                command_id: b.0,
                response_required: b.1,
                connection_id: c,
                subscription_name: s,
                client_id: id,
            })
        }),
        (base(), of(id_command()), any::<i64>()).prop_map(|(b, id, l)| Command::RemoveInfo(
            RemoveInfo {
                command_id: b.0,
                response_required: b.1,
                object_id: id.map(Box::new),
                last_delivered_sequence_id: l,
            }
        )),
    ];
    let control = prop_oneof![
        base().prop_map(|b| Command::KeepAliveInfo(KeepAliveInfo {
            command_id: b.0,
            response_required: b.1
        })),
        base().prop_map(|b| Command::ShutdownInfo(ShutdownInfo {
            command_id: b.0,
            response_required: b.1
        })),
        base().prop_map(|b| Command::FlushCommand(FlushCommand {
            command_id: b.0,
            response_required: b.1
        })),
        (base(), ostr()).prop_map(|(b, c)| Command::ControlCommand(ControlCommand {
            command_id: b.0,
            response_required: b.1,
            command: c,
        })),
        (base(), of(throwable()), of(connection_id())).prop_map(|(b, e, c)| {
            Command::ConnectionError(ConnectionError {
                command_id: b.0,
                response_required: b.1,
                exception: e,
                connection_id: c,
            })
        }),
        (
            base(),
            of(destination()),
            of(consumer_id()),
            any::<i32>(),
            any::<[bool; 4]>()
        )
            .prop_map(|(b, d, c, p, f)| {
                Command::ConsumerControl(ConsumerControl {
                    command_id: b.0,
                    response_required: b.1,
                    destination: d,
                    close: f[0],
                    consumer_id: c,
                    prefetch: p,
                    flush: f[1],
                    start: f[2],
                    stop: f[3],
                })
            }),
        (base(), any::<[bool; 6]>(), ostr(), ostr(), obytes()).prop_map(|(b, f, cb, rt, tok)| {
            Command::ConnectionControl(ConnectionControl {
                command_id: b.0,
                response_required: b.1,
                close: f[0],
                exit: f[1],
                fault_tolerant: f[2],
                resume: f[3],
                suspend: f[4],
                connected_brokers: cb,
                reconnect_to: rt,
                rebalance_connection: f[5],
                token: tok,
            })
        }),
        (base(), of(producer_id()), any::<i32>()).prop_map(|(b, p, s)| Command::ProducerAck(
            ProducerAck {
                command_id: b.0,
                response_required: b.1,
                producer_id: p,
                size: s,
            }
        )),
        (base(), any::<[i32; 2]>()).prop_map(|(b, n)| Command::ReplayCommand(ReplayCommand {
            command_id: b.0,
            response_required: b.1,
            first_nak_number: n[0],
            last_nak_number: n[1],
        })),
    ];
    let messaging = prop_oneof![
        message().prop_map(Command::Message),
        (
            base(),
            of(consumer_id()),
            of(destination()),
            of(message()),
            any::<i32>()
        )
            .prop_map(|(b, c, d, m, r)| {
                Command::MessageDispatch(MessageDispatch {
                    command_id: b.0,
                    response_required: b.1,
                    consumer_id: c,
                    destination: d,
                    message: m,
                    redelivery_counter: r,
                })
            }),
        (
            base(),
            of(destination()),
            of(transaction_id()),
            of(consumer_id()),
            any::<u8>(),
            of(message_id()),
            of(message_id()),
            any::<i32>(),
            of(throwable())
        )
            .prop_map(
                |(b, d, t, c, ty, first, last, n, cause)| Command::MessageAck(MessageAck {
                    command_id: b.0,
                    response_required: b.1,
                    destination: d,
                    transaction_id: t,
                    consumer_id: c,
                    ack_type: ty,
                    first_message_id: first,
                    last_message_id: last,
                    message_count: n,
                    poison_cause: cause,
                })
            ),
        (
            base(),
            of(consumer_id()),
            of(destination()),
            any::<i64>(),
            ostr(),
            of(message_id())
        )
            .prop_map(|(b, c, d, t, corr, m)| {
                Command::MessagePull(MessagePull {
                    command_id: b.0,
                    response_required: b.1,
                    consumer_id: c,
                    destination: d,
                    timeout: t,
                    correlation_id: corr,
                    message_id: m,
                })
            }),
        (
            base(),
            of(consumer_id()),
            of(destination()),
            any::<i64>(),
            of(message_id())
        )
            .prop_map(|(b, c, d, s, m)| {
                Command::MessageDispatchNotification(MessageDispatchNotification {
                    command_id: b.0,
                    response_required: b.1,
                    consumer_id: c,
                    destination: d,
                    delivery_sequence_id: s,
                    message_id: m,
                })
            }),
    ];
    let responses = prop_oneof![
        (base(), any::<i32>()).prop_map(|(b, c)| Command::Response(Response {
            command_id: b.0,
            response_required: b.1,
            correlation_id: c,
        })),
        (base(), any::<i32>(), of(throwable())).prop_map(|(b, c, e)| {
            Command::ExceptionResponse(ExceptionResponse {
                command_id: b.0,
                response_required: b.1,
                correlation_id: c,
                exception: e,
            })
        }),
        (base(), any::<i32>(), of(id_command())).prop_map(|(b, c, d)| Command::DataResponse(
            DataResponse {
                command_id: b.0,
                response_required: b.1,
                correlation_id: c,
                data: d.map(Box::new),
            }
        )),
        (
            base(),
            any::<i32>(),
            of(vec(transaction_id().prop_map(Command::TransactionId), 0..3))
        )
            .prop_map(|(b, c, d)| {
                Command::DataArrayResponse(DataArrayResponse {
                    command_id: b.0,
                    response_required: b.1,
                    correlation_id: c,
                    data: d,
                })
            }),
        (base(), any::<[i32; 2]>()).prop_map(|(b, n)| Command::IntegerResponse(IntegerResponse {
            command_id: b.0,
            response_required: b.1,
            correlation_id: n[0],
            result: n[1],
        })),
        (
            base(),
            of(broker_id()),
            ostr(),
            of(vec(
                (
                    ostr(),
                    of(destination()),
                    ostr(),
                    ostr(),
                    of(destination()),
                    any::<bool>()
                ),
                0..2
            ))
        )
            .prop_map(|(b, id, name, subs)| Command::BrokerSubscriptionInfo(
                BrokerSubscriptionInfo {
                    command_id: b.0,
                    response_required: b.1,
                    broker_id: id,
                    broker_name: name,
                    subscription_infos: subs.map(|v| {
                        v.into_iter()
                            .map(|(c, d, s, n, sd, nl)| SubscriptionInfo {
                                client_id: c,
                                destination: d,
                                selector: s,
                                subscription_name: n,
                                subscribed_destination: sd,
                                no_local: nl,
                            })
                            .collect()
                    }),
                }
            )),
        (
            base(),
            of(broker_id()),
            ostr(),
            ostr(),
            any::<[bool; 5]>(),
            any::<i64>()
        )
            .prop_map(|(b, id, url, name, f, c)| {
                Command::BrokerInfo(BrokerInfo {
                    command_id: b.0,
                    response_required: b.1,
                    broker_id: id.clone(),
                    broker_url: url,
                    peer_broker_infos: Some(vec![BrokerInfo {
                        broker_id: id,
                        ..BrokerInfo::default()
                    }]),
                    broker_name: name,
                    slave_broker: f[0],
                    master_broker: f[1],
                    fault_tolerant_configuration: f[2],
                    duplex_connection: f[3],
                    network_connection: f[4],
                    connection_id: c,
                    broker_upload_url: None,
                    network_properties: None,
                })
            }),
        (ostr(), ostr()).prop_map(|(s, b)| Command::DiscoveryEvent(DiscoveryEvent {
            service_name: s,
            broker_name: b
        })),
        (any::<i32>(), obytes()).prop_map(|(v, p)| Command::WireFormatInfo(WireFormatInfo {
            magic: MAGIC,
            version: v,
            marshalled_properties: p,
        })),
    ];
    prop_oneof![
        infos.boxed(),
        control.boxed(),
        messaging.boxed(),
        responses.boxed(),
        id_command().boxed()
    ]
    .boxed()
}

fn format(tight: bool, cache: bool, no_prefix: bool) -> Negotiated {
    Negotiated {
        version: 12,
        stack_trace_enabled: true,
        tcp_no_delay_enabled: true,
        cache_enabled: cache,
        // Small enough that a long sequence wraps and evicts.
        cache_size: 128,
        tight_encoding_enabled: tight,
        size_prefix_disabled: no_prefix,
        max_frame_size: 1 << 20,
        max_inactivity_duration: 0,
        max_inactivity_duration_initial_delay: 0,
    }
}

/// Runs a property in a thread with a large stack: proptest builds the
/// value trees of these wide strategies on the stack, which overflows a
/// default test thread in unoptimised builds (the codec itself is bounded by
/// its nesting limit).
fn check<S: Strategy>(
    cases: u32,
    strategy: impl FnOnce() -> S + Send + 'static,
    test: impl Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut runner = TestRunner::new(ProptestConfig {
                cases,
                ..ProptestConfig::default()
            });
            if let Err(e) = runner.run(&strategy(), test) {
                panic!("{e}");
            }
        })
        .expect("spawn")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn sequences_round_trip() {
    let strategy = || {
        (
            vec(command(), 1..12),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            1usize..64,
        )
    };
    check(300, strategy, |(cmds, tight, cache, no_prefix, chunk)| {
        let fmt = format(tight, cache, no_prefix);
        let mut enc = Codec::with_format(fmt.clone());
        let mut dec = Codec::with_format(fmt);
        let mut wire = BytesMut::new();
        for c in &cmds {
            enc.encode(c, &mut wire).unwrap();
        }
        // Feed the bytes in chunks: incomplete frames must leave the
        // decoder (and its cache) as they were.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in wire.chunks(chunk) {
            buf.extend_from_slice(part);
            while let Some(c) = dec.decode(&mut buf).unwrap() {
                got.push(c);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, cmds);
        Ok(())
    });
}

#[test]
fn arbitrary_bytes_never_panic() {
    let strategy = || {
        (
            vec(any::<u8>(), 0..512),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
    };
    check(1000, strategy, |(bytes, tight, cache, no_prefix)| {
        let mut dec = Codec::with_format(format(tight, cache, no_prefix));
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
        Ok(())
    });
}

#[test]
fn mutated_frames_never_panic() {
    let strategy = || {
        (
            command(),
            any::<bool>(),
            any::<bool>(),
            vec((any::<usize>(), any::<u8>()), 1..4),
        )
    };
    check(500, strategy, |(cmd, tight, cache, flips)| {
        let fmt = format(tight, cache, false);
        let mut wire = BytesMut::new();
        Codec::with_format(fmt.clone())
            .encode(&cmd, &mut wire)
            .unwrap();
        for (at, v) in flips {
            let n = wire.len();
            wire[at % n] ^= v;
        }
        let mut dec = Codec::with_format(fmt);
        while let Ok(Some(_)) = dec.decode(&mut wire) {}
        Ok(())
    });
}

#[test]
fn maps_round_trip() {
    check(
        300,
        || vec((text(), value()), 0..8),
        |entries| {
            let map = Map(entries);
            let mut b = BytesMut::new();
            properties::encode_map(Some(&map), &mut b).unwrap();
            prop_assert_eq!(properties::decode_map(&b).unwrap(), Some(map));
            Ok(())
        },
    );
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i8>().prop_map(Value::Byte),
        any::<u16>().prop_map(Value::Char),
        any::<i16>().prop_map(Value::Short),
        any::<i32>().prop_map(Value::Int),
        any::<i64>().prop_map(Value::Long),
        (-1e6f32..1e6).prop_map(Value::Float),
        (-1e12f64..1e12).prop_map(Value::Double),
        text().prop_map(Value::String),
        vec(any::<u8>(), 0..8).prop_map(|v| Value::Bytes(v.into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::List),
            vec((text(), inner), 0..4).prop_map(|e| Value::Map(Map(e))),
        ]
    })
}
