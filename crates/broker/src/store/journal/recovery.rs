//! Reading a journal back after a restart or crash.
//!
//! Segments are replayed in order. Within a segment every record's checksum
//! is verified, and [`scan`] notes what it could not read: damaged records
//! with valid ones after them (skipped: the scan resumes at the next valid
//! record), and damaged bytes at the end (a tail to cut off). Whether that
//! is the normal trace of a crash or confirmed data lost is decided by the
//! caller, which knows what should be there: the newest segment's manifest
//! lists every other segment with its end and record counts, and the newest
//! segment's progress stamp says how far it was confirmed.
//!
//! Records behind a batch marker are applied only if the whole batch is
//! there: a batch cut short by a crash (a transaction whose COMMIT never
//! completed) is rolled back.

use super::format::{self, Entry, FRAME_LEN, Frame, Listed, Stamp};
use super::index::{Index, Loc};

/// What recovery found, for the start-up log.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    pub(crate) segments: usize,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    /// Bytes cut off the newest segment's torn tail.
    pub(crate) torn_bytes: u64,
    /// Damaged stretches of records found (and skipped) that held
    /// confirmed data or may have.
    pub(crate) corrupt_records: u64,
    /// Batches (transactions) found incomplete and rolled back.
    pub(crate) rolled_back_batches: u64,
    /// Segment files that could not be read at all (set aside as
    /// `.corrupt`).
    pub(crate) bad_segments: u64,
    /// Whether the previous run ended with a clean shutdown.
    pub(crate) clean_shutdown: bool,
}

/// A damaged stretch skipped in the middle of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damaged {
    pub(crate) offset: u64,
    pub(crate) bytes: u64,
    pub(crate) reason: String,
}

/// How a segment's scan ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// End of the last good record.
    pub(crate) end: u64,
    /// Whether damaged bytes follow `end` (a tail to cut off).
    pub(crate) torn: bool,
    /// Valid records found (batch markers included), and the Adds among
    /// them.
    pub(crate) records: u64,
    pub(crate) adds: u64,
    /// Records and Adds found that end at or before the `mark` given.
    pub(crate) records_to_mark: u64,
    pub(crate) adds_to_mark: u64,
    /// Damaged stretches with valid records after them.
    pub(crate) damaged: Vec<Damaged>,
    /// The segment's manifest, if its first record is one.
    pub(crate) manifest: Option<Vec<Listed>>,
}

/// Finds the next offset after `from` where a valid record starts.
pub(crate) fn resync(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(FRAME_LEN)).find(|&o| match Frame::at(&buf[o..]) {
        Frame::Record { len } => format::decode(&buf[o + FRAME_LEN..o + FRAME_LEN + len]).is_ok(),
        _ => false,
    })
}

/// Replays one segment's records (from `start`, the end of its header)
/// into `index`, counting what ends at or before `mark` separately.
pub(crate) fn scan(
    seg: u64,
    buf: &[u8],
    start: usize,
    mark: Option<u64>,
    index: &mut Index,
    report: &mut Report,
) -> Scanned {
    let mut at = start;
    let mut out = Scanned::default();
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
                        out.records += 1;
                        let add = u64::from(format::is_add(&entry));
                        out.adds += add;
                        if mark.is_some_and(|m| (at + FRAME_LEN + len) as u64 <= m) {
                            out.records_to_mark += 1;
                            out.adds_to_mark += add;
                        }
                        clean = matches!(entry, Entry::Checkpoint { .. });
                        if at == start
                            && let Entry::Manifest { segments, .. } = &entry
                        {
                            out.manifest = Some(segments.clone());
                        }
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
            out.end = at as u64;
            return out;
        };
        roll_back(&mut batch, report);
        match resync(buf, at + 1) {
            Some(next) => {
                out.damaged.push(Damaged {
                    offset: at as u64,
                    bytes: (next - at) as u64,
                    reason,
                });
                at = next;
            }
            None => {
                report.clean_shutdown = false;
                out.end = at as u64;
                out.torn = true;
                return out;
            }
        }
    }
}

/// What should be in a segment, as far as recovery can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Listed in the newest segment's manifest: exactly this.
    Listed(Listed),
    /// The newest segment: confirmed at least up to its stamp.
    Stamped(Stamp),
    /// The newest segment without a stamp (format 1): nothing known.
    Newest,
    /// An older segment no manifest lists (format 1): nothing known.
    Older,
}

/// Confirmed data that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loss {
    /// The segment file's name.
    pub(crate) file: String,
    /// What is wrong with it.
    pub(crate) what: String,
    /// Records lost, if known.
    pub(crate) records: Option<u64>,
    /// Messages (Adds) lost, if known.
    pub(crate) adds: Option<u64>,
    /// Bytes of records lost (at least).
    pub(crate) bytes: u64,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: ", self.file, self.what)?;
        match (self.adds, self.records) {
            (Some(a), Some(r)) => {
                write!(f, "{a} messages ({r} records, {} bytes) lost", self.bytes)
            }
            _ => write!(
                f,
                "an unknown number of messages lost (at least {} bytes)",
                self.bytes
            ),
        }
    }
}

/// What to make of a segment's scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Confirmed data is gone.
    pub(crate) loss: Option<Loss>,
    /// Damaged stretches that count as corruption.
    pub(crate) corrupt: u64,
    /// Damaged stretches an earlier recovery accepted already (the
    /// manifest counts what was left).
    pub(crate) known_damage: bool,
    /// Cut the file here: damaged bytes at its end.
    pub(crate) cut_to: Option<u64>,
    /// Bytes of a torn tail: after everything confirmed, the trace of a
    /// write the crash interrupted. Not a loss.
    pub(crate) torn_bytes: u64,
}

fn at_offsets(d: &[Damaged]) -> String {
    let list: Vec<String> = d
        .iter()
        .map(|d| format!("{} ({} bytes, {})", d.offset, d.bytes, d.reason))
        .collect();
    list.join(", ")
}

/// Judges a segment's scan (`len`: bytes read) against what should be
/// there.
pub(crate) fn judge(file: &str, s: &Scanned, len: u64, expect: Expect) -> Verdict {
    let mut v = Verdict::default();
    let tail = if s.torn { len.saturating_sub(s.end) } else { 0 };
    if s.torn {
        v.cut_to = Some(s.end);
    }
    let damaged_before = |upto: u64| -> u64 {
        s.damaged
            .iter()
            .filter(|d| d.offset < upto)
            .map(|d| d.bytes.min(upto - d.offset))
            .sum()
    };
    let lost = |what: String, records: Option<u64>, adds: Option<u64>, bytes: u64| Loss {
        file: file.to_owned(),
        what,
        records,
        adds,
        bytes,
    };
    match expect {
        Expect::Listed(l) => {
            let records = l.records.saturating_sub(s.records);
            let adds = l.adds.saturating_sub(s.adds);
            let short = l.end.saturating_sub(s.end);
            if records > 0 || short > 0 {
                let mut what = if short > 0 {
                    format!("ends at byte {} instead of {}", s.end, l.end)
                } else {
                    String::from("has damaged records")
                };
                if !s.damaged.is_empty() {
                    what.push_str(&format!(" (damaged at byte {})", at_offsets(&s.damaged)));
                }
                v.corrupt = s.damaged.len() as u64 + u64::from(short > 0);
                v.loss = Some(lost(
                    what,
                    Some(records),
                    Some(adds),
                    short + damaged_before(l.end),
                ));
            } else {
                v.known_damage = !s.damaged.is_empty();
            }
        }
        Expect::Stamped(st) => {
            let records = st.records.saturating_sub(s.records_to_mark);
            let adds = st.adds.saturating_sub(s.adds_to_mark);
            let short = st.end.saturating_sub(s.end);
            let before: Vec<Damaged> = s
                .damaged
                .iter()
                .filter(|d| d.offset < st.end)
                .cloned()
                .collect();
            let after: Vec<Damaged> = s
                .damaged
                .iter()
                .filter(|d| d.offset >= st.end)
                .cloned()
                .collect();
            if records > 0 || short > 0 {
                let mut what = if short > 0 {
                    format!(
                        "was confirmed up to byte {} but its records end at byte {}",
                        st.end, s.end
                    )
                } else {
                    format!(
                        "has damaged records before byte {}, its confirmed end",
                        st.end
                    )
                };
                if !before.is_empty() {
                    what.push_str(&format!(" (damaged at byte {})", at_offsets(&before)));
                }
                v.corrupt = before.len() as u64 + u64::from(short > 0);
                v.loss = Some(lost(
                    what,
                    Some(records),
                    Some(adds),
                    short + damaged_before(st.end),
                ));
            }
            if !after.is_empty() {
                // Valid records after a damaged one, past the stamp: those
                // may have been confirmed (the stamp lags a sync behind), so
                // the damaged ones may have been too.
                v.corrupt += after.len() as u64;
                let what = format!(
                    "has damaged records after its last stamped record, with valid ones after them (damaged at byte {})",
                    at_offsets(&after)
                );
                let bytes = after.iter().map(|d| d.bytes).sum::<u64>();
                v.loss = Some(match v.loss.take() {
                    Some(mut l) => {
                        l.what = format!("{} and {what}", l.what);
                        l.records = None;
                        l.adds = None;
                        l.bytes += bytes;
                        l
                    }
                    None => lost(what, None, None, bytes),
                });
            }
            if s.end >= st.end {
                v.torn_bytes = tail;
            }
        }
        Expect::Newest | Expect::Older => {
            let trailing = matches!(expect, Expect::Older) && s.torn;
            if !s.damaged.is_empty() || trailing {
                let mut parts = Vec::new();
                if !s.damaged.is_empty() {
                    parts.push(format!(
                        "has damaged records at byte {}",
                        at_offsets(&s.damaged)
                    ));
                }
                if trailing {
                    parts.push(format!(
                        "ends in damaged data at byte {} ({tail} bytes)",
                        s.end
                    ));
                }
                v.corrupt = s.damaged.len() as u64 + u64::from(trailing);
                let bytes = s.damaged.iter().map(|d| d.bytes).sum::<u64>()
                    + if trailing { tail } else { 0 };
                v.loss = Some(lost(parts.join(" and "), None, None, bytes));
            }
            if !trailing {
                v.torn_bytes = tail;
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use crate::store::journal::format::{HEADER_LEN, SegmentHeader, Writer};
    use crate::store::journal::index::SegStats;

    fn add(seq: u64) -> Record {
        Record::test_add(seq)
    }

    fn segment(records: &[Vec<Record>]) -> Vec<u8> {
        let header = SegmentHeader::new(1, 0, 1, 0);
        let mut w = Writer::default();
        w.buf.extend_from_slice(&header.encode());
        w.buf.resize(HEADER_LEN, 0);
        for batch in records {
            w.batch(batch);
        }
        w.buf
    }

    fn replay(buf: &[u8], mark: Option<u64>) -> (Index, Report, Scanned) {
        let mut index = Index::default();
        index.segs.insert(1, SegStats::default());
        let mut report = Report::default();
        let s = scan(1, buf, HEADER_LEN, mark, &mut index, &mut report);
        (index, report, s)
    }

    fn live(i: &Index) -> Vec<u64> {
        let mut v: Vec<u64> = i.messages.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn frame_len(r: &Record) -> usize {
        let mut w = Writer::default();
        w.record(r);
        w.buf.len()
    }

    /// Three records and a fourth, Add 3, that may or may not have been
    /// confirmed; where Add 3 starts.
    fn four() -> (Vec<u8>, usize) {
        let full = segment(&[
            vec![add(1)],
            vec![add(2)],
            vec![Record::Remove { seq: 1 }],
            vec![add(3)],
        ]);
        let last_start = full.len() - frame_len(&add(3));
        (full, last_start)
    }

    fn stamp(end: usize, records: u64, adds: u64) -> Stamp {
        Stamp {
            end: end as u64,
            records,
            adds,
            rolled: false,
        }
    }

    #[test]
    fn a_torn_tail_after_the_stamp_is_cut_off_quietly_at_every_offset() {
        let (full, last_start) = four();
        // Confirmed through the Remove; Add 3 was being written when the
        // crash came.
        let st = stamp(last_start, 3, 2);
        let (i, r, s) = replay(&full, Some(st.end));
        assert_eq!(live(&i), vec![2, 3]);
        assert!(!s.torn && r.corrupt_records == 0);
        assert_eq!(
            (s.records, s.adds, s.records_to_mark, s.adds_to_mark),
            (4, 3, 3, 2)
        );
        assert_eq!(
            judge("f", &s, full.len() as u64, Expect::Stamped(st)),
            Verdict::default()
        );
        for cut in last_start..full.len() {
            let (i, _, s) = replay(&full[..cut], Some(st.end));
            assert_eq!(live(&i), vec![2], "cut at {cut}");
            assert_eq!(s.end as usize, last_start);
            assert_eq!(s.torn, cut > last_start, "cut at {cut}");
            let v = judge("f", &s, cut as u64, Expect::Stamped(st));
            assert_eq!(v.loss, None, "cut at {cut}");
            assert_eq!(v.corrupt, 0);
            assert_eq!(v.torn_bytes as usize, cut - last_start);
        }
        for flip in last_start..full.len() {
            let mut bad = full.clone();
            bad[flip] ^= 0x10;
            let (i, _, s) = replay(&bad, Some(st.end));
            assert_eq!(live(&i), vec![2], "flip at {flip}");
            assert!(s.torn);
            let v = judge("f", &s, bad.len() as u64, Expect::Stamped(st));
            assert_eq!(v.loss, None, "flip at {flip}");
            assert_eq!(v.cut_to, Some(last_start as u64));
        }
    }

    #[test]
    fn a_confirmed_record_cut_or_damaged_at_any_offset_is_a_loss() {
        let (full, last_start) = four();
        // Add 3 was confirmed too.
        let st = stamp(full.len(), 4, 3);
        for cut in last_start..full.len() {
            let (_, _, s) = replay(&full[..cut], Some(st.end));
            let v = judge("f", &s, cut as u64, Expect::Stamped(st));
            let loss = v.loss.expect("a cut confirmed record is a loss");
            assert_eq!(
                (loss.records, loss.adds),
                (Some(1), Some(1)),
                "cut at {cut}"
            );
            assert_eq!(loss.bytes as usize, full.len() - last_start);
            assert_eq!(v.torn_bytes, 0);
        }
        for flip in last_start..full.len() {
            let mut bad = full.clone();
            bad[flip] ^= 0x10;
            let (_, _, s) = replay(&bad, Some(st.end));
            let v = judge("f", &s, bad.len() as u64, Expect::Stamped(st));
            let loss = v.loss.expect("a damaged confirmed record is a loss");
            assert_eq!(
                (loss.records, loss.adds),
                (Some(1), Some(1)),
                "flip at {flip}"
            );
        }
        // Without a stamp (format 1) nothing tells them apart: a torn tail.
        let (_, _, s) = replay(&full[..full.len() - 1], None);
        let v = judge("f", &s, full.len() as u64 - 1, Expect::Newest);
        assert_eq!(v.loss, None);
        assert_eq!(v.torn_bytes as usize, full.len() - 1 - last_start);
    }

    #[test]
    fn corruption_in_the_middle_is_skipped_and_counted() {
        let full = segment(&[vec![add(1)], vec![add(2)], vec![add(3)]]);
        let rec = frame_len(&add(1));
        let mut bad = full.clone();
        bad[HEADER_LEN + rec + 20] ^= 0xff; // inside record 2
        let (i, _, s) = replay(&bad, Some(full.len() as u64));
        assert_eq!(live(&i), vec![1, 3]);
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(s.damaged[0].offset as usize, HEADER_LEN + rec);
        assert!(!s.torn);
        // Stamped: exactly one message lost.
        let st = stamp(full.len(), 3, 3);
        let v = judge("f", &s, bad.len() as u64, Expect::Stamped(st));
        let loss = v.loss.unwrap();
        assert_eq!((loss.records, loss.adds, v.corrupt), (Some(1), Some(1), 1));
        // Listed in a manifest: the same.
        let listed = Listed {
            id: 1,
            end: full.len() as u64,
            records: 3,
            adds: 3,
        };
        let loss = judge("f", &s, bad.len() as u64, Expect::Listed(listed))
            .loss
            .unwrap();
        assert_eq!((loss.records, loss.adds), (Some(1), Some(1)));
        assert!(loss.to_string().contains("1 messages"), "{loss}");
        // Once accepted (a manifest written after it counts what was
        // left), the same damage is no loss.
        let accepted = Listed {
            records: 2,
            adds: 2,
            ..listed
        };
        let v = judge("f", &s, bad.len() as u64, Expect::Listed(accepted));
        assert_eq!((v.loss, v.known_damage), (None, true));
        // Format 1: lost, but how much is unknown.
        let v = judge("f", &s, bad.len() as u64, Expect::Newest);
        assert_eq!(v.loss.unwrap().adds, None);
    }

    #[test]
    fn a_listed_segment_cut_short_loses_exactly_what_followed_the_cut() {
        let full = segment(&[vec![add(1)], vec![add(2), add(3)], vec![add(4)]]);
        let listed = Listed {
            id: 1,
            end: full.len() as u64,
            records: 5,
            adds: 4,
        };
        let (_, _, s) = replay(&full, None);
        assert_eq!(
            judge("f", &s, full.len() as u64, Expect::Listed(listed)),
            Verdict::default()
        );
        // Cut inside the batch's first Add: its two Adds and Add 4 are
        // gone (the batch marker is there, but its batch is rolled back).
        let marker = {
            let mut w = Writer::default();
            w.batch_marker(2);
            w.buf.len()
        };
        let cut = HEADER_LEN + frame_len(&add(1)) + marker + 20;
        let (i, r, s) = replay(&full[..cut], None);
        assert_eq!(live(&i), vec![1]);
        assert_eq!(r.rolled_back_batches, 1);
        let v = judge("f", &s, cut as u64, Expect::Listed(listed));
        let loss = v.loss.unwrap();
        assert_eq!((loss.records, loss.adds), (Some(3), Some(3)));
        assert_eq!(
            loss.bytes as usize,
            full.len() - HEADER_LEN - frame_len(&add(1)) - marker
        );
        // An older segment nothing lists that ends in damage: lost, count
        // unknown.
        let v = judge("f", &s, cut as u64, Expect::Older);
        assert_eq!(v.loss.unwrap().records, None);
    }

    #[test]
    fn damage_after_the_stamp_with_valid_records_after_it_is_a_loss_of_unknown_size() {
        let full = segment(&[vec![add(1)], vec![add(2)], vec![add(3)]]);
        let rec = frame_len(&add(1));
        let st = stamp(HEADER_LEN + rec, 1, 1);
        let mut bad = full.clone();
        bad[HEADER_LEN + rec + 20] ^= 0xff; // inside record 2, after the stamp
        let (_, _, s) = replay(&bad, Some(st.end));
        let v = judge("f", &s, bad.len() as u64, Expect::Stamped(st));
        let loss = v.loss.unwrap();
        assert_eq!((loss.records, v.corrupt), (None, 1));
    }

    #[test]
    fn an_incomplete_batch_is_rolled_back() {
        let full = segment(&[
            vec![add(1)],
            vec![add(2), add(3), Record::Remove { seq: 1 }],
        ]);
        let (i, _, _) = replay(&full, None);
        assert_eq!(live(&i), vec![2, 3]);
        let cut = full.len() - frame_len(&Record::Remove { seq: 1 });
        let (i, r, s) = replay(&full[..cut], None);
        assert_eq!(live(&i), vec![1], "partial batch applied");
        assert_eq!(r.rolled_back_batches, 1);
        assert!(!s.torn);
    }

    #[test]
    fn zeros_after_the_records_are_a_clean_end() {
        let mut full = segment(&[vec![add(1)]]);
        let end = full.len();
        full.extend_from_slice(&[0u8; 4096]);
        let (i, _, s) = replay(&full, None);
        assert_eq!(live(&i), vec![1]);
        assert_eq!((s.end as usize, s.torn), (end, false));
    }

    #[test]
    fn the_first_record_is_read_as_the_manifest() {
        let header = SegmentHeader::new(2, 0, 1, 0);
        let mut w = Writer::default();
        w.buf.extend_from_slice(&header.encode());
        w.buf.resize(HEADER_LEN, 0);
        let listed = [Listed {
            id: 1,
            end: 500,
            records: 3,
            adds: 2,
        }];
        w.manifest(false, &listed);
        w.dropped(&[1]);
        let mut index = Index {
            meta: Some(crate::store::journal::index::RecoveryMeta::default()),
            ..Index::default()
        };
        let mut report = Report::default();
        let s = scan(2, &w.buf, HEADER_LEN, None, &mut index, &mut report);
        assert_eq!(s.manifest, Some(listed.to_vec()));
        assert_eq!(index.dropped, [1].into());
        assert!(
            index.seals.is_empty(),
            "a manifest written at a roll seals nothing"
        );
    }
}
