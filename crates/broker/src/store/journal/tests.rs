//! The journal against real files in a temporary directory.

use std::sync::Arc;

use super::format::{STAMP_AT, STAMP_LEN};
use super::open::file_name;
use super::*;
use crate::model::{Destination, Value, test_message};
use crate::store::{DurableSubscription, Later, Record, StoreKey};

fn cfg(segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        segment_bytes,
        sync: SyncMode::Always,
        compact_below: 0.5,
        ..JournalConfig::default()
    }
}

fn open(dir: &Path, segment_bytes: u64) -> (JournalStore, Recovered) {
    let mut j = JournalStore::new(dir, cfg(segment_bytes), Arc::default(), 0);
    let r = j.recover_sync().unwrap();
    (j, r)
}

/// A message of about 350 bytes on disk.
fn add(seq: u64) -> Record {
    let mut m = (*test_message(seq, 4)).clone();
    m.body = bytes::Bytes::from(vec![b'b'; 300]);
    Record::Add {
        key: StoreKey::Queue("q".into()),
        message: Arc::new(m),
        dedup: None,
    }
}

fn messages(r: Recovered) -> Vec<crate::store::StoredMessage> {
    r.messages.into_sorted().collect()
}

fn seqs(r: Recovered) -> Vec<u64> {
    messages(r).iter().map(|m| m.seq).collect()
}

fn segments(dir: &Path) -> Vec<u64> {
    segment::list(&dir.join("journal")).unwrap()
}

async fn upkeep(j: &mut JournalStore) {
    for _ in 0..1000 {
        if !j.maintain().await.unwrap() {
            return;
        }
    }
    panic!("upkeep never finished");
}

#[tokio::test]
async fn survives_a_restart_with_and_without_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, r) = open(dir.path(), 1 << 20);
    assert!(r.messages.is_empty());
    j.put(&[
        vec![add(1), add(2)],
        vec![add(3)],
        vec![Record::Remove { seq: 2 }],
    ])
    .await
    .unwrap();
    j.put(&[vec![Record::Redelivered {
        seq: 3,
        deliveries: 4,
    }]])
    .await
    .unwrap();
    drop(j); // a crash: no checkpoint
    let (mut j, r) = open(dir.path(), 1 << 20);
    assert_eq!(r.max_seq, 3);
    let found = messages(r);
    assert_eq!(found.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(found[1].deliveries, 4);
    // Bodies are loaded on demand.
    let reader = j.reader();
    assert!(reader.pages());
    let loaded = reader.load(&[3, 2]);
    let Record::Add { message, .. } = add(3) else {
        unreachable!()
    };
    assert_eq!(*loaded[0].as_ref().unwrap().as_ref(), *message);
    assert!(loaded[1].is_err());
    j.close().await;
    let (_, r) = open(dir.path(), 1 << 20);
    assert_eq!(seqs(r), vec![1, 3]);
}

#[tokio::test]
async fn subscriptions_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 1 << 20);
    let sub = |name: &str| Record::SubscriptionAdd {
        client_id: "c".into(),
        name: name.into(),
        topic: Destination::topic("t"),
        selector: Some(format!("name = '{name}'")),
    };
    j.put(&[vec![sub("a"), sub("b")]]).await.unwrap();
    j.put(&[vec![Record::SubscriptionRemove {
        client_id: "c".into(),
        name: "a".into(),
    }]])
    .await
    .unwrap();
    drop(j);
    let (_, r) = open(dir.path(), 1 << 20);
    assert_eq!(
        r.subscriptions,
        vec![DurableSubscription {
            client_id: "c".into(),
            name: "b".into(),
            topic: Destination::topic("t"),
            selector: Some("name = 'b'".into()),
        }]
    );
}

#[tokio::test]
async fn dead_segments_are_deleted_and_acked_messages_never_return() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: a few messages each.
    let (mut j, _) = open(dir.path(), 4096);
    for seq in 1..=40 {
        j.put(&[vec![add(seq)]]).await.unwrap();
    }
    let before = segments(dir.path()).len();
    assert!(before >= 4, "{before} segments");
    for seq in 1..=38 {
        j.put(&[vec![Record::Remove { seq }]]).await.unwrap();
    }
    upkeep(&mut j).await;
    let after = segments(dir.path()).len();
    assert!(after < before, "nothing reclaimed: {before} -> {after}");
    drop(j);
    let (_, r) = open(dir.path(), 4096);
    assert_eq!(seqs(r), vec![39, 40]);
}

#[tokio::test]
async fn a_long_lived_message_is_compacted_forward_and_disk_use_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 8192);
    // Message 1 is never consumed; everything after it is.
    j.put(&[vec![add(1)]]).await.unwrap();
    j.put(&[vec![Record::Redelivered {
        seq: 1,
        deliveries: 2,
    }]])
    .await
    .unwrap();
    for seq in 2..=400 {
        j.put(&[vec![add(seq)]]).await.unwrap();
        j.put(&[vec![Record::Remove { seq }]]).await.unwrap();
        upkeep(&mut j).await;
    }
    let n = segments(dir.path()).len();
    assert!(n <= 5, "{n} segments kept for one live message");
    drop(j);
    let (j, r) = open(dir.path(), 8192);
    let found = messages(r);
    assert_eq!(found.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1]);
    assert_eq!(found[0].deliveries, 2);
    let m = j.reader().load(&[1]).remove(0).unwrap();
    assert_eq!(m.seq, 1);
}

/// Compaction reads a segment a window at a time: records cut by a
/// window's edge, and records larger than a window, are copied forward
/// whole, and none is lost or copied twice.
#[tokio::test]
async fn compaction_reads_segments_in_windows_and_copies_cut_and_large_records_whole() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 64 * 1024;
    let cfg = JournalConfig {
        // Smaller than most records: every other one is cut by an edge.
        compact_read_bytes: 500,
        ..cfg(seg)
    };
    let mut j = JournalStore::new(dir.path(), cfg.clone(), Arc::default(), 0);
    j.recover_sync().unwrap();
    let sized = |seq: u64| {
        let mut m = (*test_message(seq, 4)).clone();
        // 300 B, or 3 KiB every seventh: some records span many windows.
        let len = if seq.is_multiple_of(7) { 3000 } else { 300 };
        m.body = bytes::Bytes::from(vec![(seq % 251) as u8; len]);
        Record::Add {
            key: StoreKey::Queue("q".into()),
            message: Arc::new(m),
            dedup: None,
        }
    };
    // Every tenth message stays; the others are consumed, so the old
    // segments fall below `compact-below` and get compacted.
    let mut kept = Vec::new();
    for seq in 1..=1500 {
        j.put(&[vec![sized(seq)]]).await.unwrap();
        if seq.is_multiple_of(10) {
            kept.push(seq);
        } else {
            j.put(&[vec![Record::Remove { seq }]]).await.unwrap();
        }
    }
    let before = segments(dir.path()).len();
    upkeep(&mut j).await;
    let after = segments(dir.path()).len();
    assert!(after < before, "nothing compacted: {before} -> {after}");
    drop(j);
    let mut j = JournalStore::new(dir.path(), cfg, Arc::default(), 0);
    let r = j.recover_sync().unwrap();
    assert_eq!(seqs(r), kept);
    let loaded = j.reader().load(&kept);
    for (seq, m) in kept.iter().zip(loaded) {
        let m = m.unwrap();
        assert_eq!(m.seq, *seq);
        let len = if seq.is_multiple_of(7) { 3000 } else { 300 };
        assert_eq!(m.body.len(), len, "message {seq}");
        assert!(
            m.body.iter().all(|&b| b == (seq % 251) as u8),
            "message {seq}"
        );
    }
}

fn open_as(
    dir: &Path,
    segment_bytes: u64,
    on_corruption: OnCorruption,
) -> (Arc<Usage>, Result<(JournalStore, Recovered), StoreError>) {
    let usage = Arc::new(Usage::default());
    let cfg = JournalConfig {
        on_corruption,
        ..cfg(segment_bytes)
    };
    let mut j = JournalStore::new(dir, cfg, usage.clone(), 0);
    let r = j.recover_sync().map(|r| (j, r));
    (usage, r)
}

/// Opening refuses, naming what is lost; returns the message.
fn refused(dir: &Path, segment_bytes: u64) -> String {
    match open_as(dir, segment_bytes, OnCorruption::Refuse).1 {
        Err(StoreError::Corrupt(text)) => text.to_string(),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("opened a journal that lost confirmed records"),
    }
}

fn frame_of(r: &Record) -> Vec<u8> {
    let mut w = Writer::default();
    w.record(r);
    w.buf
}

fn seg_file(dir: &Path, id: u64) -> PathBuf {
    segment::path(&dir.join("journal"), id)
}

#[tokio::test]
async fn a_torn_tail_after_the_confirmed_records_is_cut_off_and_the_journal_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 1 << 20);
    j.put(&[vec![add(1)], vec![add(2)]]).await.unwrap();
    let head = j.head.as_ref().unwrap().id;
    let len = j.head.as_ref().unwrap().len;
    drop(j);
    // A crash in the middle of the next write: half of a record after the
    // confirmed ones.
    let torn = frame_of(&add(3));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg_file(dir.path(), head))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &torn[..torn.len() / 2], len).unwrap();
    let (mut j, r) = open(dir.path(), 1 << 20);
    assert_eq!(seqs(r), vec![1, 2]);
    j.put(&[vec![add(3)]]).await.unwrap();
    drop(j);
    let (_, r) = open(dir.path(), 1 << 20);
    assert_eq!(seqs(r), vec![1, 2, 3]);
}

#[tokio::test]
async fn confirmed_records_cut_off_the_newest_segment_are_refused_then_served_with_skip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 1 << 20);
    j.put(&[vec![add(1)]]).await.unwrap();
    j.put(&[vec![add(2)]]).await.unwrap();
    let head = j.head.as_ref().unwrap().id;
    let len = j.head.as_ref().unwrap().len;
    drop(j);
    // Cut 10 bytes off the last record: it was confirmed.
    let path = seg_file(dir.path(), head);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 10).unwrap();
    let text = refused(dir.path(), 1 << 20);
    assert!(
        text.contains(&file_name(head)) && text.contains("1 messages") && text.contains("skip"),
        "{text}"
    );
    // Refusing changed nothing.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len - 10);
    let (usage, opened) = open_as(dir.path(), 1 << 20, OnCorruption::Skip);
    let (mut j, r) = opened.unwrap();
    assert_eq!(seqs(r), vec![1]);
    assert_eq!(
        usage
            .lost_messages
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        usage.corruption.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    j.put(&[vec![add(3)]]).await.unwrap();
    drop(j);
    // Accepted once, the loss is not reported again.
    let (usage, opened) = open_as(dir.path(), 1 << 20, OnCorruption::Refuse);
    assert_eq!(seqs(opened.unwrap().1), vec![1, 3]);
    assert_eq!(
        usage.corruption.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn a_missing_segment_is_reported_exactly_and_deleted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    for seq in 1..=60 {
        j.put(&[vec![add(seq)]]).await.unwrap();
    }
    // The first messages are consumed and their segments deleted.
    for seq in 1..=15 {
        j.put(&[vec![Record::Remove { seq }]]).await.unwrap();
    }
    let before = segments(dir.path());
    upkeep(&mut j).await;
    let after = segments(dir.path());
    assert!(after[0] > before[0], "nothing deleted: {before:?}");
    // Take one from the middle away.
    let gone = after[after.len() / 2];
    let (records, adds) = {
        let idx = read(&j.catalog.index);
        let s = &idx.segs[&gone];
        (s.records, s.adds)
    };
    assert!(adds > 0);
    drop(j);
    std::fs::remove_file(seg_file(dir.path(), gone)).unwrap();
    let text = refused(dir.path(), 4096);
    assert!(
        text.contains(&format!("{} is missing", file_name(gone)))
            && text.contains(&format!("{adds} messages ({records} records")),
        "{text}"
    );
    for deleted in before.iter().filter(|s| !after.contains(s)) {
        assert!(!text.contains(&file_name(*deleted)), "{text}");
    }
    let (usage, opened) = open_as(dir.path(), 4096, OnCorruption::Skip);
    let found = seqs(opened.unwrap().1);
    assert_eq!(found.len() as u64, 45 - adds);
    assert_eq!(
        usage
            .lost_messages
            .load(std::sync::atomic::Ordering::Relaxed),
        adds
    );
    let (_, opened) = open_as(dir.path(), 4096, OnCorruption::Refuse);
    assert_eq!(seqs(opened.unwrap().1), found);
}

#[tokio::test]
async fn an_unreadable_segment_header_is_reported_with_what_the_manifest_says_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    for seq in 1..=30 {
        j.put(&[vec![add(seq)]]).await.unwrap();
    }
    let all = segments(dir.path());
    let bad = all[1];
    let adds = read(&j.catalog.index).segs[&bad].adds;
    drop(j);
    let path = seg_file(dir.path(), bad);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff; // the segment id, inside the header's checksum
    std::fs::write(&path, &bytes).unwrap();
    let text = refused(dir.path(), 4096);
    assert!(
        text.contains(&format!("{} has an unreadable header", file_name(bad)))
            && text.contains(&format!("{adds} messages")),
        "{text}"
    );
    assert!(path.exists(), "refusing moved the file");
    let (_, opened) = open_as(dir.path(), 4096, OnCorruption::Skip);
    assert_eq!(seqs(opened.unwrap().1).len() as u64, 30 - adds);
    assert!(path.with_extension("corrupt").exists());
    let (_, opened) = open_as(dir.path(), 4096, OnCorruption::Refuse);
    assert!(opened.is_ok(), "the loss was reported again");
}

#[tokio::test]
async fn a_newest_segment_whose_successor_is_missing_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    for seq in 1..=30 {
        j.put(&[vec![add(seq)]]).await.unwrap();
    }
    drop(j);
    let all = segments(dir.path());
    let newest = *all.last().unwrap();
    let path = seg_file(dir.path(), newest);
    let kept = std::fs::read(&path).unwrap();
    // Cut inside its header: unreadable, and not taken for missing.
    std::fs::write(&path, &kept[..100]).unwrap();
    let text = refused(dir.path(), 4096);
    assert!(
        text.contains(&format!("{} has an unreadable header", file_name(newest)))
            && !text.contains("is missing"),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
    let text = refused(dir.path(), 4096);
    assert!(
        text.contains(&format!("{} is missing", file_name(newest))),
        "{text}"
    );
}

#[tokio::test]
async fn the_stamp_follows_each_sync_and_a_full_segment_is_closed_for_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    let stamp_of = |id: u64| {
        let bytes = std::fs::read(seg_file(dir.path(), id)).unwrap();
        Stamp::decode(&bytes[STAMP_AT..STAMP_AT + STAMP_LEN]).unwrap()
    };
    let first = j.head.as_ref().unwrap().id;
    j.put(&[vec![add(1)]]).await.unwrap();
    let h = j.head.as_ref().unwrap();
    assert_eq!(
        stamp_of(first),
        Stamp {
            end: h.len,
            records: 2,
            adds: 1,
            rolled: false
        }
    );
    // Bookkeeping nobody waits for is not stamped until a sync.
    j.write(&[vec![Record::Remove { seq: 1 }]], false)
        .await
        .unwrap();
    assert_eq!(stamp_of(first).records, 2);
    while j.head.as_ref().unwrap().id == first {
        j.put(&[vec![add(2)]]).await.unwrap();
    }
    let closed = stamp_of(first);
    assert!(closed.rolled);
    assert_eq!(
        std::fs::metadata(seg_file(dir.path(), first))
            .unwrap()
            .len(),
        closed.end,
        "the closed segment keeps its preallocation"
    );
    let idx = read(&j.catalog.index);
    assert_eq!(
        (closed.records, closed.adds),
        (idx.segs[&first].records, idx.segs[&first].adds)
    );
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_a_recovery_could_take_for_records() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 1 << 20);
    j.put(&[vec![add(1)]]).await.unwrap();
    // A write of two records reached the file, then failed: nothing of it
    // was confirmed.
    let (file, base) = {
        let h = j.head.as_ref().unwrap();
        (h.file.clone(), h.len)
    };
    let mut failed = frame_of(&add(2));
    failed.extend(frame_of(&add(3)));
    file.write_all_at(&failed, base).unwrap();
    j.clear_failed_write(base, failed.len()).unwrap();
    // The next write is shorter than the failed one.
    j.put(&[vec![Record::Remove { seq: 1 }]]).await.unwrap();
    drop(j);
    let (_, r) = open(dir.path(), 1 << 20);
    assert!(seqs(r).is_empty(), "the failed write's records came back");
}

#[tokio::test]
async fn journals_written_in_format_1_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    let v1 = |id: u64, records: &[Vec<Record>], seal: bool| {
        let header = SegmentHeader {
            version: 1,
            ..SegmentHeader::new(id, 0, 1, 0)
        };
        let mut w = Writer::default();
        w.buf.extend_from_slice(&header.encode());
        if seal {
            w.seal(&[]);
        }
        for b in records {
            w.batch(b);
        }
        std::fs::write(segment::path(&jdir, id), &w.buf).unwrap();
        w.buf.len()
    };
    v1(1, &[vec![add(1)], vec![add(2)]], true);
    let len = v1(2, &[vec![add(3)], vec![Record::Remove { seq: 1 }]], false);
    let (mut j, r) = open(dir.path(), 1 << 20);
    assert_eq!(seqs(r), vec![2, 3]);
    // The first segment of format 2 lists them.
    let head = j.head.as_ref().unwrap().id;
    assert_eq!(head, 3);
    j.put(&[vec![add(4)]]).await.unwrap();
    drop(j);
    let (_, r) = open(dir.path(), 1 << 20);
    assert_eq!(seqs(r), vec![2, 3, 4]);
    // A format 1 segment has no stamp: nothing tells a cut confirmed
    // record from a torn tail, so the cut is taken for one (as before).
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    let v1 = |id: u64, records: &[Vec<Record>]| {
        let header = SegmentHeader {
            version: 1,
            ..SegmentHeader::new(id, 0, 1, 0)
        };
        let mut w = Writer::default();
        w.buf.extend_from_slice(&header.encode());
        for b in records {
            w.batch(b);
        }
        std::fs::write(segment::path(&jdir, id), &w.buf[..w.buf.len() - 5]).unwrap();
    };
    v1(1, &[vec![add(1)], vec![add(2)]]);
    let (_, r) = open(dir.path(), 1 << 20);
    assert_eq!(seqs(r), vec![1]);
    let _ = len;
}

#[tokio::test]
async fn sequence_numbers_never_go_back_even_when_everything_was_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    for seq in 1..=30 {
        j.put(&[vec![add(seq), Record::Remove { seq }]])
            .await
            .unwrap();
    }
    upkeep(&mut j).await;
    drop(j);
    let (_, r) = open(dir.path(), 4096);
    assert!(r.messages.is_empty());
    assert!(r.max_seq >= 30, "max_seq {}", r.max_seq);
}

#[test]
fn sync_modes_parse() {
    assert_eq!(SyncMode::parse("always"), Some(SyncMode::Always));
    assert_eq!(SyncMode::parse("never"), Some(SyncMode::Never));
    assert_eq!(SyncMode::parse("batch-ms 5"), Some(SyncMode::BatchMs(5)));
    assert_eq!(SyncMode::parse("batch-ms=20"), Some(SyncMode::BatchMs(20)));
    for bad in ["sometimes", "batch-ms", "batch-ms 0", "batch-ms x", ""] {
        assert_eq!(SyncMode::parse(bad), None, "{bad}");
    }
}

impl JournalStore {
    /// A durable write, as a waiting producer would ask for.
    async fn put(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        self.write(batches, true).await
    }
}

/// A journal in `dir` holding messages 1..=n, left as by a crash.
async fn crashed_with(dir: &Path, n: u64) {
    let (mut j, _) = open(dir, 4096);
    for seq in 1..=n {
        j.put(&[vec![add(seq)]]).await.unwrap();
    }
    drop(j);
}

/// Messages 1 and 2 by a master (epoch 1); a new master (epoch 2) takes
/// over while the old one still runs and finds them; the stale one writes
/// on (3, and removes 1) into its old segment before it notices; the new
/// one writes 4. Returns (stale, new).
async fn late_writes_of_a_stale_master(dir: &Path) -> (JournalStore, JournalStore) {
    let mut stale = JournalStore::new(dir, cfg(1 << 20), Arc::default(), 1);
    stale.recover_sync().unwrap();
    stale.put(&[vec![add(1)], vec![add(2)]]).await.unwrap();
    let mut master = JournalStore::new(dir, cfg(1 << 20), Arc::default(), 2);
    let r = master.recover_sync().unwrap();
    assert_eq!(seqs(r), vec![1, 2]);
    stale
        .put(&[vec![add(3)], vec![Record::Remove { seq: 1 }]])
        .await
        .unwrap();
    master.put(&[vec![add(4)]]).await.unwrap();
    (stale, master)
}

#[tokio::test]
async fn records_a_stale_master_appends_after_a_takeover_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (stale, master) = late_writes_of_a_stale_master(dir.path()).await;
    drop(stale);
    drop(master);
    let mut next = JournalStore::new(dir.path(), cfg(1 << 20), Arc::default(), 3);
    let r = next.recover_sync().unwrap();
    assert_eq!(
        seqs(r),
        vec![1, 2, 4],
        "a stale master's late writes were applied"
    );
    assert_eq!(JournalStore::max_epoch(dir.path()), 3);
}

/// An Add with a duplicate-detection id.
fn add_id(seq: u64, id: &str) -> Record {
    let Record::Add { key, message, .. } = add(seq) else {
        unreachable!()
    };
    Record::Add {
        key,
        message,
        dedup: Some(id.into()),
    }
}

fn ids(r: &Recovered) -> Vec<String> {
    r.duplicate_ids
        .iter()
        .filter(|(k, _)| *k == StoreKey::Queue("q".into()))
        .flat_map(|(_, ids)| ids.iter().map(|i| i.to_string()))
        .collect()
}

#[tokio::test]
async fn duplicate_ids_outlive_their_messages_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: each holds a few messages, so acknowledged ones'
    // segments are deleted.
    let (mut j, _) = open(dir.path(), 2048);
    for seq in 1..=20 {
        j.put(&[vec![add_id(seq, &format!("id-{seq}"))]])
            .await
            .unwrap();
    }
    for seq in 1..=20 {
        j.put(&[vec![Record::Remove { seq }]]).await.unwrap();
    }
    let before = segments(dir.path());
    upkeep(&mut j).await;
    let after = segments(dir.path());
    assert!(
        after.len() < before.len() && after[0] > before[0],
        "dead segments not deleted: {before:?} -> {after:?}"
    );
    drop(j);
    let (mut j, r) = open(dir.path(), 2048);
    assert!(r.messages.is_empty());
    let want: Vec<String> = (1..=20).map(|s| format!("id-{s}")).collect();
    assert_eq!(ids(&r), want);
    // Again after another round of deletions, and with a window of 5 the
    // newest 5 are kept.
    for seq in 21..=30 {
        j.put(&[vec![add(seq)]]).await.unwrap();
        j.put(&[vec![Record::Remove { seq }]]).await.unwrap();
    }
    upkeep(&mut j).await;
    drop(j);
    let (_, r) = open(dir.path(), 2048);
    assert_eq!(ids(&r), want);
    let mut small = JournalStore::new(dir.path(), cfg(2048), Arc::default(), 0).duplicate_window(5);
    let r = small.recover_sync().unwrap();
    assert_eq!(ids(&r), want[15..].to_vec());
}

/// The newest segment is read only as far as it was written; a record
/// full of zeros (longer than the first read) must not look like its end.
#[tokio::test]
async fn zeros_inside_records_of_the_newest_segment_are_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 32 << 20);
    let mut m = (*test_message(1, 4)).clone();
    m.body = bytes::Bytes::from(vec![0u8; 700 * 1024]);
    let zeros = Arc::new(m);
    j.put(&[vec![Record::Add {
        key: StoreKey::Queue("q".into()),
        message: zeros.clone(),
        dedup: None,
    }]])
    .await
    .unwrap();
    j.put(&[vec![add(2)]]).await.unwrap();
    drop(j); // a crash: the preallocated zeros stay
    let (j, r) = open(dir.path(), 32 << 20);
    assert_eq!(seqs(r), vec![1, 2]);
    let loaded = j.reader().load(&[1]);
    assert_eq!(*loaded[0].as_ref().unwrap().as_ref(), *zeros);
}

/// A journal written by the broker of the previous release (format 2:
/// string headers, destinations by name; see tests/fixtures/README.md)
/// opens and gives back every message, header, delivery count, duplicate
/// id and subscription; new messages (and a queue declaration) then go to
/// segments of this version's format beside the old ones, and both kinds
/// come back together.
#[tokio::test]
async fn a_journal_written_by_format_2_opens() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v2");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    for file in std::fs::read_dir(&fixture).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), journal.join(file.file_name())).unwrap();
    }
    let version = |id: u64| {
        let head = std::fs::read(segment::path(&journal, id)).unwrap();
        u16::from_le_bytes([head[8], head[9]])
    };
    let old = segments(dir.path());
    assert_eq!(old.len(), 2);
    assert!(old.iter().all(|&id| version(id) == 2));
    // A new master, as after the old one was killed.
    let epoch = JournalStore::max_epoch(dir.path()) + 1;
    let open = || {
        let mut j = JournalStore::new(dir.path(), cfg(1 << 20), Arc::default(), epoch)
            .duplicate_bounds(crate::store::DuplicateBounds {
                per_key: 100,
                total: usize::MAX,
                max_age_ms: 0,
            });
        let r = j.recover_sync().unwrap();
        (j, r)
    };
    let (mut j, r) = open();
    let reader = j.reader();
    let mut first = None;
    let max_seq = crate::store::fixtures::check_v2(r, |seqs| {
        let loaded = reader.load(seqs);
        first = Some((seqs[0], loaded[0].as_ref().unwrap().clone()));
        loaded
    });
    let (first_seq, first) = first.unwrap();
    assert_eq!(&first.body[..], b"one");

    let mut typed = (*test_message(max_seq + 1, 4)).clone();
    typed.properties = [
        ("n".to_owned(), Value::I32(7)),
        ("s".to_owned(), Value::from("x")),
    ]
    .into_iter()
    .collect();
    let typed = Arc::new(typed);
    j.put(&[vec![
        Record::Add {
            key: StoreKey::Queue("fixture.orders".into()),
            message: typed.clone(),
            dedup: None,
        },
        Record::Remove { seq: first_seq },
        declare("fixture.orders"),
    ]])
    .await
    .unwrap();
    drop(j);
    let newest = *segments(dir.path()).last().unwrap();
    assert!(!old.contains(&newest) && version(newest) == format::VERSION);
    let (j, r) = open();
    assert_eq!(r.queues, vec![Destination::queue("fixture.orders")]);
    let found = seqs(r);
    assert_eq!(found.len(), 7);
    assert!(!found.contains(&first_seq));
    assert_eq!(found.last(), Some(&typed.seq));
    let loaded = j.reader().load(&found);
    assert_eq!(*loaded[6].as_ref().unwrap().as_ref(), *typed);
    assert!(loaded.iter().all(Result::is_ok));
}

fn declare(queue: &str) -> Record {
    Record::QueueDeclared {
        queue: Destination::queue(queue),
    }
}

/// Where the live declaration of `queue` is: segment and offset.
fn declared_at(j: &JournalStore, queue: &str) -> (u64, u32) {
    let at = read(&j.catalog.index).queues[&Destination::queue(queue)].at;
    (at.seg, at.off)
}

/// Messages added, each consumed once [`WINDOW`] more have come, with
/// upkeep after each: segments fill, die and are compacted (compaction
/// leaves the two newest closed segments alone, so some must stay live).
async fn churn(j: &mut JournalStore, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        j.put(&[vec![add(seq)]]).await.unwrap();
        if seq > WINDOW {
            j.put(&[vec![Record::Remove { seq: seq - WINDOW }]])
                .await
                .unwrap();
        }
        upkeep(j).await;
    }
}

/// Messages live at a time in [`churn`]: more than a 4 KiB segment holds.
const WINDOW: u64 = 15;

/// A declaration is live like a durable subscription: the segments around
/// it are deleted, its own is compacted (the declaration copied forward
/// with its place in declaration order), and it is recovered, in its
/// place, however the copies came to lie. A dropped queue's declaration is
/// not copied, and its drop outlives it.
#[tokio::test]
async fn declared_queues_survive_segment_reclaim_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    j.put(&[vec![declare("a"), declare("gone")]]).await.unwrap();
    let (first, _) = declared_at(&j, "a");
    churn(&mut j, 1..=60).await;
    assert!(
        !segments(dir.path()).contains(&first),
        "the declarations' first segment was never reclaimed"
    );
    // `b` is declared in a later segment than `a` lies in now.
    let mut seq = 60;
    while declared_at(&j, "a").0 == j.head.as_ref().unwrap().id {
        seq += 1;
        churn(&mut j, seq..=seq).await;
    }
    j.put(&[vec![declare("b")]]).await.unwrap();
    let (b_first, _) = declared_at(&j, "b");
    j.put(&[vec![Record::QueueDropped {
        queue: Destination::queue("gone"),
    }]])
    .await
    .unwrap();
    // Churn until compaction has copied `a` past `b`: the journal's order
    // of records is then no longer the order of declaration.
    while declared_at(&j, "a") < declared_at(&j, "b") {
        assert!(seq < 1000, "compaction never copied `a` past `b`");
        seq += 1;
        churn(&mut j, seq..=seq).await;
    }
    let n = segments(dir.path()).len();
    assert!(n <= 6, "{n} segments kept");
    drop(j);
    let (mut j, r) = open(dir.path(), 4096);
    assert_eq!(
        r.queues,
        vec![Destination::queue("a"), Destination::queue("b")]
    );
    assert_eq!(seqs(r), (seq - WINDOW + 1..=seq).collect::<Vec<_>>());
    // A new declaration goes after them, though the journal's count of
    // places was rebuilt from what is left.
    j.put(&[vec![declare("c")]]).await.unwrap();
    churn(&mut j, seq + 1..=seq + 100).await;
    assert!(
        !segments(dir.path()).contains(&b_first),
        "the segment `b` was declared in was never reclaimed"
    );
    drop(j);
    let (_, r) = open(dir.path(), 4096);
    assert_eq!(
        r.queues,
        ["a", "b", "c"].map(Destination::queue).to_vec(),
        "after another round of reclaiming"
    );
}

/// A journal written by the previous release (format 3: no queue
/// declarations) opens as it is; declarations then go to format 4
/// segments beside the old ones.
#[tokio::test]
async fn a_journal_written_by_format_3_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    for seq in 1..=20 {
        j.put(&[vec![add(seq)]]).await.unwrap();
    }
    j.put(&[vec![Record::SubscriptionAdd {
        client_id: "c".into(),
        name: "s".into(),
        topic: Destination::topic("t"),
        selector: None,
    }]])
    .await
    .unwrap();
    drop(j);
    // What format 3 wrote is what this version writes without
    // declarations, under a header saying 3.
    let old = segments(dir.path());
    assert!(old.len() > 1);
    for &id in &old {
        let path = seg_file(dir.path(), id);
        let mut data = std::fs::read(&path).unwrap();
        let mut header = SegmentHeader::decode(&data).unwrap();
        assert_eq!(header.version, format::VERSION);
        header.version = 3;
        data[..FIXED_LEN].copy_from_slice(&header.encode());
        std::fs::write(&path, &data).unwrap();
    }
    let version = |id: u64| {
        SegmentHeader::decode(&std::fs::read(seg_file(dir.path(), id)).unwrap())
            .unwrap()
            .version
    };
    let (mut j, r) = open(dir.path(), 4096);
    assert!(r.queues.is_empty());
    assert_eq!(r.subscriptions.len(), 1);
    assert_eq!(seqs(r), (1..=20).collect::<Vec<_>>());
    j.put(&[vec![declare("a"), Record::Remove { seq: 1 }]])
        .await
        .unwrap();
    drop(j);
    let (_, r) = open(dir.path(), 4096);
    assert_eq!(r.queues, vec![Destination::queue("a")]);
    assert_eq!(seqs(r), (2..=20).collect::<Vec<_>>());
    let now = segments(dir.path());
    assert!(old.iter().all(|id| !now.contains(id) || version(*id) == 3));
    assert_eq!(version(*now.last().unwrap()), format::VERSION);
}

// Index checkpoints (checkpoint.rs): whatever a checkpoint is, recovery
// must end with exactly what reading the whole journal gives.

/// A copy of `from`'s journal in `to`, so the same files can be recovered
/// twice, once each way.
fn copy_journal(from: &Path, to: &Path) {
    let (f, t) = (from.join("journal"), to.join("journal"));
    std::fs::create_dir_all(&t).unwrap();
    for e in std::fs::read_dir(&f).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), t.join(e.file_name())).unwrap();
    }
}

fn open_with(dir: &Path, segment_bytes: u64, checkpoints: bool) -> (JournalStore, Recovered) {
    let mut c = cfg(segment_bytes);
    c.on_corruption = OnCorruption::Skip;
    if !checkpoints {
        c.checkpoint_bytes = 0;
    }
    let mut j = JournalStore::new(dir, c, Arc::default(), 0);
    let r = j.recover_sync().unwrap();
    (j, r)
}

/// Everything recovery hands the broker and keeps for itself, in a form
/// two recoveries can be compared by.
fn state(j: &JournalStore, r: Recovered) -> String {
    let idx = read(&j.catalog.index);
    let mut out = String::new();
    for (id, s) in &idx.segs {
        out += &format!(
            "seg {id} end {} records {} adds {} live {} / {} refs {:?}\n",
            s.end, s.records, s.adds, s.live_items, s.live_bytes, s.refs
        );
    }
    let mut sorted: Vec<_> = idx.messages.iter().collect();
    sorted.sort_unstable_by_key(|(seq, _)| **seq);
    out += &format!("messages {sorted:?}\n");
    let mut redeliveries: Vec<_> = idx
        .redeliveries
        .iter()
        .map(|(s, r)| (*s, r.deliveries, r.until_ms, r.at))
        .collect();
    redeliveries.sort_unstable_by_key(|r| r.0);
    let mut schedules: Vec<_> = idx
        .schedules
        .iter()
        .map(|(s, r)| (*s, r.state.due, r.at))
        .collect();
    schedules.sort_unstable_by_key(|r| r.0);
    let mut subs: Vec<_> = idx.subs.iter().map(|(k, s)| (k.clone(), s.at)).collect();
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seals: Vec<_> = idx.seals.iter().collect();
    seals.sort();
    out += &format!(
        "redeliveries {redeliveries:?}\nschedules {schedules:?}\nsubs {subs:?}\nseals {seals:?}\nmax {} declarations {}\n",
        idx.max_seq, idx.declarations
    );
    drop(idx);
    out += &format!("recovered max {} queues {:?}\n", r.max_seq, r.queues);
    let mut subscriptions = r.subscriptions.clone();
    subscriptions.sort_by(|a, b| (&a.client_id, &a.name).cmp(&(&b.client_id, &b.name)));
    out += &format!("subscriptions {subscriptions:?}\n");
    let mut dups = r.duplicate_ids.clone();
    dups.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    out += &format!("duplicate ids {dups:?}\n");
    for m in r.messages.into_sorted() {
        out += &format!(
            "{} {:?} p{} e{} w{} d{} nb{} {:?}\n",
            m.seq, m.key, m.priority, m.expires, m.weight, m.deliveries, m.not_before, m.schedule
        );
    }
    out
}

/// What recovering a copy of `dir` gives, with checkpoints or reading
/// everything, and whether a checkpoint was used.
fn recover_copy(dir: &Path, checkpoints: bool, prepare: impl FnOnce(&Path)) -> (String, bool) {
    let copy = tempfile::tempdir().unwrap();
    copy_journal(dir, copy.path());
    prepare(&copy.path().join("journal"));
    let (j, r) = open_with(copy.path(), 4096, checkpoints);
    let used = j.from_checkpoint;
    (state(&j, r), used)
}

/// Every kind of record, segments filling, dying and being compacted.
async fn varied_work(j: &mut JournalStore, from: u64) {
    let sub = |name: &str| Record::SubscriptionAdd {
        client_id: "c".into(),
        name: name.into(),
        topic: Destination::topic("t"),
        selector: None,
    };
    j.put(&[vec![
        declare(&format!("a{from}")),
        declare("b"),
        sub(&format!("s{from}")),
    ]])
    .await
    .unwrap();
    churn(j, from..=from + 40).await;
    j.put(&[vec![
        add_id(from + 100, &format!("id-{from}")),
        add(from + 101),
    ]])
    .await
    .unwrap();
    j.put(&[vec![
        Record::Redelivered {
            seq: from + 100,
            deliveries: 2,
        },
        Record::Delayed {
            seq: from + 101,
            deliveries: 1,
            until_ms: 77,
        },
        Record::SubscriptionRemove {
            client_id: "c".into(),
            name: format!("s{}", from.saturating_sub(200)),
        },
        Record::QueueDropped {
            queue: Destination::queue("b"),
        },
    ]])
    .await
    .unwrap();
    upkeep(j).await;
}

#[tokio::test]
async fn recovery_from_a_checkpoint_ends_where_reading_everything_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 1).await;
    j.checkpointer().write_one().unwrap();
    // After the checkpoint: segments it covers die, records cancel records
    // it holds, compaction moves what it points at.
    varied_work(&mut j, 200).await;
    varied_work(&mut j, 400).await;
    drop(j); // a crash
    let (full, used) = recover_copy(dir.path(), false, |_| {});
    assert!(!used);
    let (fast, used) = recover_copy(dir.path(), true, |_| {});
    assert!(used, "the checkpoint was not used");
    assert_eq!(fast, full);
    assert!(full.contains("seg "), "{full}");

    // A checkpoint of the very end, after a clean shutdown.
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 600).await;
    j.close().await;
    drop(j);
    let (full, _) = recover_copy(dir.path(), false, |_| {});
    let (fast, used) = recover_copy(dir.path(), true, |_| {});
    assert!(used);
    assert_eq!(fast, full);
}

/// What recovery hands over from the index once the broker serves
/// (`later.rs`), a few at a time, is what it lists when asked to list
/// everything: every live message with its details, the scheduler's at
/// once and the rest after, none twice; also after the journal moved on.
#[tokio::test]
async fn messages_handed_over_later_are_those_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 1).await;
    let mut scheduled = (*test_message(900, 4)).clone();
    scheduled.body = bytes::Bytes::from_static(b"later");
    j.put(&[vec![
        Record::Add {
            key: StoreKey::Scheduled,
            message: Arc::new(scheduled),
            dedup: None,
        },
        Record::Schedule {
            seq: 900,
            due: 12345,
            fired: 2,
        },
    ]])
    .await
    .unwrap();
    j.checkpointer().write_one().unwrap();
    varied_work(&mut j, 200).await;
    drop(j); // a crash
    for checkpoints in [false, true] {
        let (listed, _) = recover_copy(dir.path(), checkpoints, |_| {});
        let copy = tempfile::tempdir().unwrap();
        copy_journal(dir.path(), copy.path());
        let mut c = cfg(4096);
        c.on_corruption = OnCorruption::Skip;
        if !checkpoints {
            c.checkpoint_bytes = 0;
        }
        let mut j = JournalStore::new(copy.path(), c, Arc::default(), 0).hand_over_later();
        let mut r = j.recover_sync().unwrap();
        let count = r.message_count();
        assert!(
            r.messages.len() == 1 && r.messages.keys().contains(&StoreKey::Scheduled),
            "only the scheduler's come at once: {:?}",
            r.messages
        );
        let Some(Later(mut later)) = r.later.take() else {
            panic!("nothing handed over later");
        };
        assert!(later.in_use().iter().any(|u| *u));
        let mut handed = 0;
        loop {
            let chunk = later.next_chunk(3).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 3);
            for (key, m) in chunk {
                assert_eq!(later.keys()[key as usize], m.key);
                assert!(later.in_use()[key as usize]);
                handed += 1;
                r.messages.push(m);
            }
        }
        assert_eq!(handed, later.len());
        assert_eq!(r.message_count(), count);
        assert!(later.next_chunk(3).await.unwrap().is_empty());
        assert_eq!(state(&j, r), listed, "checkpoints {checkpoints}");
    }
}

/// The duplicate bounds `JournalStore::new` starts with.
fn default_bounds() -> crate::store::DuplicateBounds {
    crate::store::DuplicateBounds {
        per_key: 2000,
        total: usize::MAX,
        max_age_ms: 0,
    }
}

fn standby_with_copy(dir: &Path) -> Arc<Standby> {
    let standby = Standby::watch(dir, default_bounds()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !standby.holds_copy() {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby decoded no checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    standby
}

/// A slave decodes the master's checkpoint while it waits; a takeover
/// starts from that copy, with the same result as reading everything, and
/// only while it is still the file in place: one the master replaced since
/// is not used.
#[tokio::test]
async fn a_checkpoint_a_slave_decoded_ahead_is_used_only_while_it_is_the_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 1).await;
    j.checkpointer().write_one().unwrap();
    varied_work(&mut j, 200).await;
    drop(j); // a crash
    let (full, _) = recover_copy(dir.path(), false, |_| {});

    let standby = standby_with_copy(dir.path());
    let mut c = cfg(4096);
    c.on_corruption = OnCorruption::Skip;
    let mut j = JournalStore::new(dir.path(), c.clone(), Arc::default(), 0)
        .with_standby(Some(standby.clone()));
    let r = j.recover_sync().unwrap();
    assert!(j.from_checkpoint);
    assert!(!standby.holds_copy(), "the copy was not taken");
    assert_eq!(state(&j, r), full);

    // The new master writes on and checkpoints again; a slave's copy of
    // the checkpoint before is stale.
    varied_work(&mut j, 400).await;
    j.checkpointer().write_one().unwrap();
    drop(j);
    let standby = standby_with_copy(dir.path());
    standby.stop();
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 600).await;
    j.checkpointer().write_one().unwrap();
    drop(j);
    assert!(
        standby.take().is_none(),
        "a replaced checkpoint's copy was handed over"
    );
    let (full, _) = recover_copy(dir.path(), false, |_| {});
    let mut j = JournalStore::new(dir.path(), c, Arc::default(), 0).with_standby(Some(standby));
    let r = j.recover_sync().unwrap();
    assert!(j.from_checkpoint);
    assert_eq!(state(&j, r), full);
}

/// A crash at any step of writing a checkpoint — the new file written
/// aside and cut anywhere, or renamed into place but damaged — leaves a
/// journal that recovers exactly, from the old checkpoint or from
/// everything; a checkpoint claiming more than the journal holds is not
/// believed.
#[tokio::test]
async fn a_crash_at_any_step_of_writing_a_checkpoint_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 1).await;
    j.checkpointer().write_one().unwrap(); // the old checkpoint
    varied_work(&mut j, 200).await;
    let new = checkpoint::encode(&read(&j.catalog.index), 0);
    varied_work(&mut j, 400).await;
    drop(j);
    let (full, _) = recover_copy(dir.path(), false, |_| {});
    let steps: Vec<usize> = (0..new.len())
        .step_by((new.len() / 40).max(1))
        .chain([new.len() - 1])
        .collect();
    for &cut in &steps {
        // Killed while writing the new one aside: the old one is used.
        let (fast, used) = recover_copy(dir.path(), true, |j| {
            std::fs::write(j.join("index.checkpoint.tmp"), &new[..cut]).unwrap();
        });
        assert!(used, "cut at {cut}");
        assert_eq!(fast, full, "temporary file cut at {cut}");
        // In place but damaged: not believed.
        let (fast, used) = recover_copy(dir.path(), true, |j| {
            std::fs::write(j.join("index.checkpoint"), &new[..cut]).unwrap();
        });
        assert!(!used, "cut at {cut}");
        assert_eq!(fast, full, "checkpoint cut at {cut}");
    }
    // Renamed into place whole: used.
    let (fast, used) = recover_copy(dir.path(), true, |j| {
        std::fs::write(j.join("index.checkpoint"), &new).unwrap();
    });
    assert!(used);
    assert_eq!(fast, full);
    // A checkpoint of the end, with the journal cut short since (as if it
    // were written before the journal's records were durable): not
    // believed, whatever reading everything then finds.
    let (mut j, _) = open(dir.path(), 4096);
    varied_work(&mut j, 600).await;
    j.checkpointer().write_one().unwrap();
    let head = *read(&j.catalog.index).segs.keys().next_back().unwrap();
    let end = read(&j.catalog.index).segs[&head].end;
    drop(j);
    let cut = |d: &Path| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join(file_name(head)))
            .unwrap();
        f.set_len(end - 100).unwrap();
    };
    let (full, _) = recover_copy(dir.path(), false, cut);
    let (fast, used) = recover_copy(dir.path(), true, cut);
    assert!(!used);
    assert_eq!(fast, full);
}

/// Restarts leave heads holding only their manifest; the next master
/// deletes them and then writes a checkpoint. The newest manifest still
/// lists the deleted one, and its deletion record lies before the
/// checkpoint's place: the checkpoint must say so, or the next recovery
/// takes the deletion for a loss (found by `bench/deep-queue.sh`).
#[tokio::test]
async fn a_segment_deleted_before_the_checkpoint_is_not_taken_for_lost() {
    let dir = tempfile::tempdir().unwrap();
    crashed_with(dir.path(), 20).await;
    let (j, _) = open(dir.path(), 4096);
    drop(j);
    let before = segments(dir.path());
    let (mut j, _) = open(dir.path(), 4096);
    upkeep(&mut j).await;
    let after = segments(dir.path());
    assert!(
        before.iter().any(|s| !after.contains(s)),
        "nothing deleted: {before:?} {after:?}"
    );
    j.checkpointer().write_one().unwrap();
    drop(j);
    let (full, _) = recover_copy(dir.path(), false, |_| {});
    let (fast, used) = recover_copy(dir.path(), true, |_| {});
    assert!(used);
    assert_eq!(fast, full);
    let copy = tempfile::tempdir().unwrap();
    copy_journal(dir.path(), copy.path());
    std::fs::remove_file(copy.path().join("journal/index.checkpoint")).unwrap();
    open_as(copy.path(), 4096, OnCorruption::Refuse)
        .1
        .expect("reading everything takes a deleted segment for lost");
    let (usage, opened) = open_as(dir.path(), 4096, OnCorruption::Refuse);
    let (j, r) = opened.expect("a deleted segment taken for lost");
    assert!(j.from_checkpoint);
    assert_eq!(seqs(r), (1..=20).collect::<Vec<_>>());
    assert_eq!(
        usage
            .lost_messages
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A stale master that writes a checkpoint after a newer master took over
/// (its lock check passed just before the takeover): the checkpoint holds
/// its late records, which the newer master's seal excludes. The next
/// recovery must not believe it.
#[tokio::test]
async fn a_checkpoint_a_stale_master_writes_after_a_takeover_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let (stale, master) = late_writes_of_a_stale_master(dir.path()).await;
    stale.checkpointer().write_one().unwrap();
    drop(stale);
    drop(master);
    let mut next = JournalStore::new(dir.path(), cfg(1 << 20), Arc::default(), 3);
    let r = next.recover_sync().unwrap();
    assert!(!next.from_checkpoint);
    assert_eq!(
        seqs(r),
        vec![1, 2, 4],
        "a stale master's checkpoint was believed"
    );
}

/// The checkpoint's own segment deleted since (a restart's head holding
/// only its manifest, deleted by the next master, which died before its
/// own first checkpoint): still used, and exact.
#[tokio::test]
async fn a_checkpoint_whose_segment_was_deleted_since_is_still_used() {
    let dir = tempfile::tempdir().unwrap();
    crashed_with(dir.path(), 20).await;
    let (j, _) = open(dir.path(), 4096);
    j.checkpointer().write_one().unwrap();
    let head = *read(&j.catalog.index).segs.keys().next_back().unwrap();
    drop(j);
    let (mut j, _) = open(dir.path(), 4096);
    upkeep(&mut j).await;
    assert!(
        !segments(dir.path()).contains(&head),
        "the old head was not deleted"
    );
    j.put(&[vec![add(21)], vec![Record::Remove { seq: 3 }]])
        .await
        .unwrap();
    drop(j);
    let (full, _) = recover_copy(dir.path(), false, |_| {});
    let (fast, used) = recover_copy(dir.path(), true, |_| {});
    assert!(used);
    assert_eq!(fast, full);
    let (_, opened) = open_as(dir.path(), 4096, OnCorruption::Refuse);
    let (j, r) = opened.expect("refused");
    assert!(j.from_checkpoint);
    assert_eq!(seqs(r).len(), 20);
}

/// A journal recovered by reading everything writes a checkpoint as soon
/// as it is quiet, even if nothing is written after the recovery: the next
/// takeover then need not read everything again.
#[tokio::test]
async fn a_checkpoint_follows_a_full_recovery_without_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    crashed_with(dir.path(), 20).await;
    let file = dir.path().join("journal").join(checkpoint::FILE);
    let _ = std::fs::remove_file(&file);
    let (j, _) = open(dir.path(), 4096);
    assert!(!j.from_checkpoint);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after a full recovery"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(j);
    let (j, r) = open(dir.path(), 4096);
    assert!(j.from_checkpoint);
    assert_eq!(seqs(r), (1..=20).collect::<Vec<_>>());
}
