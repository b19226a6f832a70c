//! Warm standby connections (`backup=true`): opened ahead of need to other
//! brokers of the list, so that a failover can skip connecting.
//!
//! Each standby connection lives on a small task of its own that answers
//! heart-beats until the engine takes the connection, and ends (closing
//! it) if the broker goes away or says anything else: a standby that the
//! engine finds gone is simply not used.

use tokio::sync::oneshot;

use crate::conn::Conn;
use crate::url::Endpoint;

pub(crate) struct Backup {
    pub(crate) endpoint: Endpoint,
    take: oneshot::Sender<oneshot::Sender<Conn>>,
}

impl Backup {
    /// Keeps `conn` alive until it is taken.
    pub(crate) fn keep(conn: Conn) -> Backup {
        let endpoint = conn.endpoint.clone();
        let (take, mut asked) = oneshot::channel::<oneshot::Sender<Conn>>();
        tokio::spawn(async move {
            let mut conn = conn;
            tokio::select! {
                ask = &mut asked => {
                    if let Ok(reply) = ask {
                        let _ = reply.send(conn);
                    }
                }
                // `next` answers heart-beats itself; any frame or error
                // means the standby is no use.
                r = conn.next() => {
                    tracing::debug!(broker = %conn.endpoint, outcome = ?r.err(), "standby connection ended");
                }
            }
        });
        Backup { endpoint, take }
    }

    /// Whether the standby connection is still up (as far as is known).
    pub(crate) fn is_alive(&self) -> bool {
        !self.take.is_closed()
    }

    /// The connection, if it is still up.
    pub(crate) async fn take(self) -> Option<Conn> {
        let (tx, rx) = oneshot::channel();
        self.take.send(tx).ok()?;
        rx.await.ok()
    }
}
