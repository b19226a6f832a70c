//! Loading message bodies back from the segments for deep queues, on the
//! readers' threads, beside the writer.

use super::format::{FRAME_LEN, Frame};
use super::{Catalog, format, read, segment};
use crate::model::Message;
use crate::store::{MessageReader, StoreError};
use bytes::Bytes;
use std::sync::Arc;

/// Loads message bodies from the segments.
pub(super) struct Reader {
    pub(super) catalog: Arc<Catalog>,
}

impl Reader {
    fn load_one(&self, seq: u64, common: &mut format::Common) -> Result<Arc<Message>, StoreError> {
        let fail = |reason: String| StoreError::Read {
            seq,
            reason: reason.into(),
        };
        // Compaction may move the record and delete its segment between the
        // lookup and the read: look again.
        for _ in 0..3 {
            let Some(loc) = read(&self.catalog.index).messages.get(&seq).map(|l| l.at) else {
                return Err(fail("not in the journal".into()));
            };
            let Some(file) = read(&self.catalog.files).get(&loc.seg).cloned() else {
                continue;
            };
            let bytes: Bytes = segment::read_at(&file, u64::from(loc.off), loc.len as usize)
                .map_err(|e| StoreError::ReadFailed {
                    seq,
                    source: Arc::new(e),
                })?
                .into();
            let Frame::Record { len } = Frame::at(&bytes) else {
                return Err(fail(format!(
                    "damaged record in segment {} at {}",
                    loc.seg, loc.off
                )));
            };
            // A body that is most of its record keeps the record's buffer
            // rather than being copied out of it (a 100 MiB body is then
            // held once, not twice, while it is read back).
            let body = |b: &[u8]| {
                if b.len().saturating_mul(2) >= bytes.len() {
                    bytes.slice_ref(b)
                } else {
                    Bytes::copy_from_slice(b)
                }
            };
            let payload = &bytes[FRAME_LEN..FRAME_LEN + len];
            let (_, message) = format::decode_message_with(payload, common, body)
                .map_err(|e| fail(e.to_string()))?;
            if message.seq != seq {
                return Err(fail("index points at another message".into()));
            }
            return Ok(Arc::new(message));
        }
        Err(fail("its segment keeps moving".into()))
    }
}

impl MessageReader for Reader {
    fn pages(&self) -> bool {
        true
    }

    fn load(&self, seqs: &[u64]) -> Vec<Result<Arc<Message>, StoreError>> {
        // Messages loaded together share their destination and id prefix.
        let mut common = format::Common::default();
        seqs.iter()
            .map(|&s| self.load_one(s, &mut common))
            .collect()
    }
}
