//! Reading a journal back after a restart or crash.
//!
//! Segments are replayed in order. Within a segment every record's checksum
//! is verified. What a bad record means depends on what follows it:
//! - nothing valid after it in the newest segment: a torn tail, the normal
//!   result of a crash mid-write; it held nothing that was acknowledged to a
//!   client (receipts come after the sync), so it is cut off quietly;
//! - valid records after it: corruption in the middle; it is skipped, and
//!   reported loudly and counted.
//!
//! Records behind a batch marker are applied only if the whole batch is
//! there: a batch cut short by a crash (a transaction whose COMMIT never
//! completed) is rolled back.

use super::format::{self, Entry, FRAME_LEN, Frame, HEADER_LEN, SegmentHeader};
use super::index::{Index, Loc};

/// What recovery found, for the start-up log.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    pub(crate) segments: usize,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    /// Bytes cut off the newest segment's torn tail.
    pub(crate) torn_bytes: u64,
    /// Damaged records skipped in the middle of a segment.
    pub(crate) corrupt_records: u64,
    /// Batches (transactions) found incomplete and rolled back.
    pub(crate) rolled_back_batches: u64,
    /// Segment files that could not be read at all (set aside as
    /// `.corrupt`).
    pub(crate) bad_segments: u64,
    /// Whether the previous run ended with a clean shutdown.
    pub(crate) clean_shutdown: bool,
}

/// How a segment's scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// End of the last good record.
    pub(crate) end: u64,
    /// Whether damaged bytes follow `end` (a torn tail to cut off).
    pub(crate) torn: bool,
}

/// Finds the next offset after `from` where a valid record starts.
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(FRAME_LEN)).find(|&o| match Frame::at(&buf[o..]) {
        Frame::Record { len } => format::decode(&buf[o + FRAME_LEN..o + FRAME_LEN + len]).is_ok(),
        _ => false,
    })
}

/// Replays one segment's records (after its header) into `index`.
pub(crate) fn scan(
    seg: u64,
    buf: &[u8],
    newest: bool,
    index: &mut Index,
    report: &mut Report,
) -> Scanned {
    let mut at = HEADER_LEN;
    let mut batch: Option<(u32, Vec<(Entry, Loc)>)> = None;
    let mut clean = false;
    let roll_back = |batch: &mut Option<(u32, Vec<(Entry, Loc)>)>, report: &mut Report| {
        if batch.take().is_some() {
            report.rolled_back_batches += 1;
        }
    };
    loop {
        let bad = match Frame::at(&buf[at.min(buf.len())..]) {
            Frame::Record { len } => {
                let payload = &buf[at + FRAME_LEN..at + FRAME_LEN + len];
                match format::decode(payload) {
                    Ok(entry) => {
                        let loc = Loc {
                            seg,
                            off: at as u32,
                            len: (FRAME_LEN + len) as u32,
                        };
                        report.records += 1;
                        clean = matches!(entry, Entry::Checkpoint { .. });
                        match (entry, &mut batch) {
                            (Entry::Batch { count }, b) => {
                                roll_back(b, report);
                                *b = Some((count, Vec::with_capacity(count.min(4096) as usize)));
                            }
                            (entry, Some((count, records))) => {
                                records.push((entry, loc));
                                if records.len() as u32 >= *count {
                                    for (e, l) in records.drain(..) {
                                        index.apply(&e, l);
                                    }
                                    batch = None;
                                }
                            }
                            (entry, None) => index.apply(&entry, loc),
                        }
                        at += FRAME_LEN + len;
                        continue;
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
            Frame::End => None,
            Frame::Incomplete => Some("record cut short".to_owned()),
            Frame::Bad(e) => Some(e.to_string()),
        };
        let Some(reason) = bad else {
            // Clean end of the written part.
            roll_back(&mut batch, report);
            report.clean_shutdown = clean;
            return Scanned {
                end: at as u64,
                torn: false,
            };
        };
        roll_back(&mut batch, report);
        match resync(buf, at + 1) {
            Some(next) => {
                report.corrupt_records += 1;
                tracing::error!(
                    segment = seg,
                    offset = at,
                    skipped_bytes = next - at,
                    %reason,
                    "CORRUPT JOURNAL RECORD in the middle of a segment: skipped; the records in it are lost"
                );
                at = next;
            }
            None => {
                let torn = (buf.len() - at) as u64;
                if !newest {
                    report.corrupt_records += 1;
                    tracing::error!(
                        segment = seg,
                        offset = at,
                        lost_bytes = torn,
                        %reason,
                        "CORRUPT JOURNAL: an older segment ends in damaged data; the records in it are lost"
                    );
                }
                report.torn_bytes += torn;
                report.clean_shutdown = false;
                return Scanned {
                    end: at as u64,
                    torn: true,
                };
            }
        }
    }
}

/// Checks a segment's header; `None` if the file is not a usable segment.
pub(crate) fn header(buf: &[u8]) -> Result<SegmentHeader, format::FormatError> {
    SegmentHeader::decode(buf)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::journal::format::Writer;
    use crate::store::journal::index::SegStats;
    use crate::store::{Record, StoreKey};

    fn add(seq: u64) -> Record {
        Record::Add {
            key: StoreKey::Queue("q".into()),
            message: crate::core::test_message(seq, 4),
            dedup: None,
        }
    }

    fn segment(records: &[Vec<Record>]) -> Vec<u8> {
        let header = SegmentHeader {
            id: 1,
            epoch: 0,
            seq_floor: 1,
            created_ms: 0,
        };
        let mut w = Writer::default();
        w.buf.extend_from_slice(&header.encode());
        for batch in records {
            w.batch(batch);
        }
        w.buf
    }

    fn replay(buf: &[u8], newest: bool) -> (Index, Report, Scanned) {
        let mut index = Index::default();
        index.segs.insert(1, SegStats::default());
        let mut report = Report::default();
        let s = scan(1, buf, newest, &mut index, &mut report);
        (index, report, s)
    }

    fn live(i: &Index) -> Vec<u64> {
        let mut v: Vec<u64> = i.messages.keys().copied().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_offset_of_the_last_record() {
        let full = segment(&[
            vec![add(1)],
            vec![add(2)],
            vec![Record::Remove { seq: 1 }],
            vec![add(3)],
        ]);
        let (i, r, s) = replay(&full, true);
        assert_eq!(live(&i), vec![2, 3]);
        assert!(!s.torn && r.corrupt_records == 0);
        let last_start = s.end as usize - {
            let mut w = Writer::default();
            w.record(&add(3));
            w.buf.len()
        };
        for cut in last_start..full.len() {
            let (i, r, s) = replay(&full[..cut], true);
            assert_eq!(live(&i), vec![2], "cut at {cut}");
            assert_eq!(s.end as usize, last_start);
            assert_eq!(s.torn, cut > last_start, "cut at {cut}");
            assert_eq!(r.corrupt_records, 0);
        }
        for flip in last_start..full.len() {
            let mut bad = full.clone();
            bad[flip] ^= 0x10;
            let (i, r, s) = replay(&bad, true);
            assert_eq!(live(&i), vec![2], "flip at {flip}");
            assert!(s.torn);
            assert_eq!(r.corrupt_records, 0);
        }
    }

    #[test]
    fn corruption_in_the_middle_is_skipped_and_counted() {
        let full = segment(&[vec![add(1)], vec![add(2)], vec![add(3)]]);
        let mut w = Writer::default();
        w.record(&add(1));
        let rec = w.buf.len();
        let mut bad = full.clone();
        bad[HEADER_LEN + rec + 20] ^= 0xff; // inside record 2
        let (i, r, s) = replay(&bad, true);
        assert_eq!(live(&i), vec![1, 3]);
        assert_eq!(r.corrupt_records, 1);
        assert!(!s.torn);
    }

    #[test]
    fn an_incomplete_batch_is_rolled_back() {
        let full = segment(&[
            vec![add(1)],
            vec![add(2), add(3), Record::Remove { seq: 1 }],
        ]);
        let (i, _, _) = replay(&full, true);
        assert_eq!(live(&i), vec![2, 3]);
        let mut w = Writer::default();
        w.record(&Record::Remove { seq: 1 });
        let cut = full.len() - w.buf.len();
        let (i, r, s) = replay(&full[..cut], true);
        assert_eq!(live(&i), vec![1], "partial batch applied");
        assert_eq!(r.rolled_back_batches, 1);
        assert!(!s.torn);
    }

    #[test]
    fn zeros_after_the_records_are_a_clean_end() {
        let mut full = segment(&[vec![add(1)]]);
        let end = full.len();
        full.extend_from_slice(&[0u8; 4096]);
        let (i, _, s) = replay(&full, true);
        assert_eq!(live(&i), vec![1]);
        assert_eq!((s.end as usize, s.torn), (end, false));
        let _ = Arc::new(0);
    }
}
