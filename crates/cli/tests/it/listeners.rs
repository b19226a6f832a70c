//! Where an in-process broker listens besides STOMP: every head on a port
//! of its own that the kernel picked, so that tests running in parallel
//! never meet on a protocol's default port (61614 for `ws`, 61616 for
//! `openwire`), and the [`TestBroker`] fields that say where each one is.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::inproc::TestBroker;
use crate::tls::{Pki, raw_tls};
use halyard_testkit::stomp::WAIT;

/// The WireFormatInfo a default ActiveMQ 5.17 client sends first, as its
/// own `OpenWireFormat` marshals it (the codec's golden frame).
fn client_wire_format_info() -> Vec<u8> {
    let golden = include_str!("../../../openwire/tests/golden/wireformat.hex");
    let hex = golden
        .lines()
        .find_map(|l| l.strip_prefix("wire_format_info "))
        .expect("the golden WireFormatInfo");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Says hello as a JMS client does, then expects the broker's
/// WireFormatInfo: a 4-byte size, data type 1 and the magic `ActiveMQ`.
/// Proves the port is the OpenWire head's.
async fn expect_wire_format_info<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    stream.write_all(&client_wire_format_info()).await.unwrap();
    let mut head = [0u8; 13];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("no WireFormatInfo in time")
        .expect("the connection closed before a WireFormatInfo");
    assert_eq!(head[4], 1, "data type of the first frame: {head:02x?}");
    assert_eq!(&head[5..], b"ActiveMQ", "magic of the first frame");
}

#[tokio::test]
async fn parallel_brokers_each_serve_openwire_on_a_port_of_their_own() {
    let (a, b) = tokio::join!(TestBroker::start(""), TestBroker::start(""));
    let (a_ow, b_ow) = (
        a.openwire.expect("a's openwire listener"),
        b.openwire.expect("b's openwire listener"),
    );
    assert_ne!(a_ow, b_ow);
    for addr in [a_ow, b_ow] {
        assert_ne!(addr.port(), 61616, "the default port: tests would collide");
        assert!(addr.ip().is_loopback(), "{addr}");
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        expect_wire_format_info(&mut tcp).await;
    }
    assert_eq!(a.openwire_ssl, None, "no openwire+ssl listener configured");
}

#[tokio::test]
async fn openwire_ssl_with_the_test_ca() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let b = TestBroker::start(&format!(
        "[tls]\ncert-file = \"{}\"\nkey-file = \"{}\"\n\
         [[listeners]]\nprotocol = \"stomp\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nprotocol = \"openwire+ssl\"\naddress = \"127.0.0.1:0\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
    ))
    .await;
    assert_eq!(
        b.openwire, None,
        "[[listeners]] without an openwire entry has none"
    );
    let addr = b.openwire_ssl.expect("the openwire+ssl listener");
    let (_, mut tls) = raw_tls(addr, &pki.ca_file()).await.unwrap();
    expect_wire_format_info(&mut tls).await;
}
