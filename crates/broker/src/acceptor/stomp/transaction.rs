//! BEGIN, COMMIT and ABORT: the broker service keeps the transaction; the
//! session only names it and orders the receipt.

use halyard_stomp::Frame;

use super::error::{Fatal, missing};
use super::session::Session;

fn tx_id<'a>(frame: &'a Frame, command: &str) -> Result<&'a str, Fatal> {
    frame
        .headers
        .get("transaction")
        .ok_or_else(|| missing(command, "transaction"))
}

impl Session {
    pub(super) fn begin(&mut self, frame: Frame, receipt: Option<String>) -> Result<(), Fatal> {
        self.conn()?.begin(tx_id(&frame, "BEGIN")?)?;
        self.receipt(receipt)
    }

    pub(super) async fn commit(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let confirm = receipt.is_some();
        let (work, bytes) = self
            .conn()?
            .commit(tx_id(&frame, "COMMIT")?, confirm)
            .await?;
        self.after(bytes, receipt, work)
    }

    pub(super) async fn abort(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let work = self.conn()?.abort(tx_id(&frame, "ABORT")?).await?;
        self.after(0, receipt, work)
    }
}
