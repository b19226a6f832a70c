//! A TCP proxy that can be cut like a network partition.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to an upstream address until [`Proxy::cut`]; from
/// then on it is a black hole, as a partitioned network is: nothing more is
/// forwarded either way, no connection is closed or reset (so neither end
/// learns anything), and new connections are accepted and then ignored.
///
/// Its tasks run on the runtime of the caller of [`Proxy::start`] and end
/// with it.
pub struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a port of 127.0.0.1 chosen by the kernel, forwarding to
    /// `upstream` (`host:port`).
    ///
    /// # Panics
    ///
    /// If it cannot listen.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("halyard-testkit: the proxy cannot listen: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("halyard-testkit: the proxy has no address: {e}"));
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let cut = watching.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if *cut.borrow() {
                        return hold(vec![inbound]).await;
                    }
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, cut.clone()));
                    tokio::spawn(pump(ro, wi, cut));
                });
            }
        });
        Proxy { addr, cut }
    }

    /// Where clients connect to reach the upstream through the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Partitions the network: see [`Proxy`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

/// Copies `from` to `to` until the proxy is cut (then holds both, silent).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if *cut.borrow() {
            break;
        }
        tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    // Lost in the partition if it came too late.
                    if *cut.borrow() || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            _ = cut.changed() => {}
        }
    }
    hold((from, to)).await;
}

/// Keeps sockets open, unread and unwritten, until the runtime ends.
async fn hold<T>(sockets: T) {
    std::future::pending::<()>().await;
    drop(sockets);
}
