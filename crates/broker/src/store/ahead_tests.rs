//! The writer with a backend that sends groups ahead
//! ([`StoreBackend::send_ahead`]): answers stay in order, at most two
//! groups are at the backend, a broken connection's groups are written
//! again in order, and duplicate detection never trusts a group that may
//! still fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::*;

/// What the scripted backend was asked, in order: ("ahead" or "write",
/// the sequence numbers of the group's records).
type Log = Arc<Mutex<Vec<(&'static str, Vec<u64>)>>>;

/// Sends every group ahead and lets the test give each its outcome.
struct Scripted {
    log: Log,
    /// The outcome senders of the groups sent ahead, in order.
    outcomes: Arc<Mutex<Vec<oneshot::Sender<AheadOutcome>>>>,
    /// Each outcome passes through a task on the writer's runtime, as a
    /// database connection's answers do (its task reads the socket): the
    /// writer learns it only once it lets that task run.
    relayed: bool,
}

fn seqs(batches: &[Batch]) -> Vec<u64> {
    batches
        .iter()
        .flatten()
        .map(|r| match r {
            Record::Add { message, .. } => message.seq,
            Record::Remove { seq } => *seq,
            _ => 0,
        })
        .collect()
}

impl StoreBackend for Scripted {
    async fn recover(&mut self) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }
    async fn write(&mut self, batches: &[Batch], _sync: bool) -> Result<(), StoreError> {
        self.log.lock().unwrap().push(("write", seqs(batches)));
        Ok(())
    }
    fn send_ahead(&mut self, batches: &[Batch], _sync: bool) -> Option<Ahead> {
        let (tx, rx) = oneshot::channel();
        self.log.lock().unwrap().push(("ahead", seqs(batches)));
        self.outcomes.lock().unwrap().push(tx);
        let rx = if self.relayed {
            let (relay, relayed) = oneshot::channel();
            tokio::spawn(async move {
                if let Ok(outcome) = rx.await {
                    let _ = relay.send(outcome);
                }
            });
            relayed
        } else {
            rx
        };
        Some(Box::pin(async move {
            rx.await
                .unwrap_or(AheadOutcome::Done(Err(StoreError::Closed)))
        }))
    }
    fn reader(&self) -> Arc<dyn MessageReader> {
        MemoryStore::new().reader()
    }
}

struct Harness {
    store: Store,
    log: Log,
    outcomes: Arc<Mutex<Vec<oneshot::Sender<AheadOutcome>>>>,
}

fn harness() -> Harness {
    harness_with(2)
}

fn harness_with(in_flight: usize) -> Harness {
    harness_waiting(in_flight, WriterConfig::default().group_wait)
}

fn harness_waiting(in_flight: usize, group_wait: Duration) -> Harness {
    harness_of(in_flight, group_wait, false)
}

fn harness_of(in_flight: usize, group_wait: Duration, relayed: bool) -> Harness {
    let log = Log::default();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let (store, _) = Store::spawn(
        Scripted {
            log: log.clone(),
            outcomes: outcomes.clone(),
            relayed,
        },
        Arc::new(Usage::default()),
        WriterConfig {
            duplicates: DuplicateBounds::per_key(100),
            in_flight,
            group_wait,
            ..WriterConfig::default()
        },
        Vec::new(),
    )
    .unwrap();
    Harness {
        store,
        log,
        outcomes,
    }
}

impl Harness {
    /// Waits until the backend has been asked `n` things.
    async fn asked(&self, n: usize) -> Vec<(&'static str, Vec<u64>)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.len() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the backend was asked only {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Submits a removal of `seq`.
    async fn submit(&self, seq: u64) -> Completion {
        self.store
            .submit(vec![Record::Remove { seq }])
            .await
            .unwrap()
    }

    /// Submits a removal of `seq` and waits until the backend has been
    /// asked `n` things in all.
    async fn remove(&self, seq: u64, n: usize) -> Completion {
        let c = self.submit(seq).await;
        self.asked(n).await;
        c
    }

    /// Gives the `i`th group sent ahead its outcome.
    fn answer(&self, i: usize, outcome: AheadOutcome) {
        let tx = {
            let mut outcomes = self.outcomes.lock().unwrap();
            let (dummy, _) = oneshot::channel();
            std::mem::replace(&mut outcomes[i], dummy)
        };
        tx.send(outcome).unwrap();
    }
}

fn ok() -> AheadOutcome {
    AheadOutcome::Done(Ok(()))
}

/// A negative check: `c` is still unanswered a while after whatever could
/// have answered it.
async fn still_waiting(c: &mut Completion) {
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c)
            .await
            .is_err(),
        "answered too soon"
    );
}

fn add(seq: u64, id: &str) -> Record {
    Record::Add {
        key: StoreKey::Queue("q".into()),
        message: crate::model::test_message(seq, 4),
        dedup: Some(Arc::from(id)),
    }
}

#[tokio::test]
async fn a_group_sent_ahead_is_answered_only_after_the_one_before_it() {
    let h = harness();
    let mut c1 = h.remove(1, 1).await;
    let mut c2 = h.remove(2, 2).await;
    assert_eq!(
        *h.log.lock().unwrap(),
        vec![("ahead", vec![1]), ("ahead", vec![2])],
        "the second group goes while the first is at the backend"
    );
    // The second group's answer comes first: its submitter still waits.
    h.answer(1, ok());
    still_waiting(&mut c2).await;
    still_waiting(&mut c1).await;
    h.answer(0, ok());
    c1.await.unwrap();
    c2.await.unwrap();
}

#[tokio::test]
async fn at_most_two_groups_are_at_the_backend() {
    let h = harness();
    let c1 = h.remove(1, 1).await;
    let c2 = h.remove(2, 2).await;
    let mut c3 = h
        .store
        .submit(vec![Record::Remove { seq: 3 }])
        .await
        .unwrap();
    still_waiting(&mut c3).await;
    assert_eq!(h.log.lock().unwrap().len(), 2, "a third group went ahead");
    h.answer(0, ok());
    c1.await.unwrap();
    assert_eq!(h.asked(3).await[2], ("ahead", vec![3]));
    h.answer(1, ok());
    h.answer(2, ok());
    c2.await.unwrap();
    c3.await.unwrap();
}

#[tokio::test]
async fn with_one_group_in_flight_nothing_is_sent_ahead() {
    let h = harness_with(1);
    for seq in 1..=3 {
        let c = h.store.submit(vec![Record::Remove { seq }]).await.unwrap();
        c.await.unwrap();
    }
    assert_eq!(
        *h.log.lock().unwrap(),
        vec![("write", vec![1]), ("write", vec![2]), ("write", vec![3])]
    );
}

#[tokio::test]
async fn groups_whose_connection_broke_are_written_again_in_order() {
    let h = harness();
    let c1 = h.remove(1, 1).await;
    let c2 = h.remove(2, 2).await;
    h.answer(0, AheadOutcome::Again);
    // The first is not written again while the second may still be under
    // way on the old connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.log.lock().unwrap().len(), 2, "written again too soon");
    h.answer(1, AheadOutcome::Again);
    assert_eq!(
        h.asked(4).await[2..],
        [("write", vec![1]), ("write", vec![2])],
        "both written again, in order"
    );
    c1.await.unwrap();
    c2.await.unwrap();
}

/// A producer's copy sent again while the first copy's group is still
/// being written: if that group fails, the copy must be stored, not taken
/// for a duplicate of a message that never was.
#[tokio::test]
async fn a_copy_of_a_message_in_a_group_ahead_waits_for_that_groups_answer() {
    let h = harness();
    let c1 = h.store.submit(vec![add(1, "m-1")]).await.unwrap();
    h.asked(1).await;
    let c2 = h.store.submit(vec![add(2, "m-1")]).await.unwrap();
    let mut c2 = std::pin::pin!(c2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.log.lock().unwrap().len(),
        1,
        "the copy went ahead before the first group's answer"
    );
    assert!(futures::poll!(&mut c2).is_pending());
    h.answer(
        0,
        AheadOutcome::Done(Err(StoreError::unavailable("test: no room"))),
    );
    assert!(c1.await.is_err());
    assert_eq!(
        h.asked(2).await[1],
        ("ahead", vec![2]),
        "the copy is stored, not dropped as a duplicate"
    );
    h.answer(1, ok());
    let found = c2.await.unwrap();
    assert!(!found.contains(2));
}

/// Brings the writer to where the last group it answered had three
/// submitters, then has one group at the backend (removing 6) and a lone
/// submitter after it (removing 7), whose completions it returns. The
/// groups asked so far are [1], [2], [3, 4, 5] and [6].
async fn one_ahead_after_a_cohort_of_three(h: &Harness) -> (Completion, Completion) {
    let c1 = h.remove(1, 1).await;
    let c2 = h.remove(2, 2).await;
    // The writer waits for the first group's answer: these queue up and
    // then go as one group.
    let mut rest = Vec::new();
    for seq in 3..=5 {
        rest.push(h.submit(seq).await);
    }
    h.answer(0, ok());
    assert_eq!(h.asked(3).await[2], ("ahead", vec![3, 4, 5]));
    h.answer(1, ok());
    h.answer(2, ok());
    c1.await.unwrap();
    c2.await.unwrap();
    for c in rest {
        c.await.unwrap();
    }
    // Nothing else is at the backend, so this goes at once; now one is.
    let c6 = h.remove(6, 4).await;
    (c6, h.submit(7).await)
}

/// Waits a while, then says whether the backend has still been asked
/// only `n` things.
async fn still_asked(h: &Harness, n: usize) -> bool {
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.log.lock().unwrap().len() == n
}

/// While a group is at the backend, the next one waits for as many
/// submitters as the last group answered had, and goes with all of them.
#[tokio::test]
async fn a_group_waits_for_its_cohort_while_one_is_ahead() {
    let h = harness_waiting(2, Duration::from_secs(10));
    let (c6, c7) = one_ahead_after_a_cohort_of_three(&h).await;
    assert!(still_asked(&h, 4).await, "one of three went alone");
    let c8 = h.submit(8).await;
    let c9 = h.submit(9).await;
    assert_eq!(h.asked(5).await[4], ("ahead", vec![7, 8, 9]));
    h.answer(3, ok());
    h.answer(4, ok());
    for c in [c6, c7, c8, c9] {
        c.await.unwrap();
    }
}

/// A group waiting for its cohort goes as soon as the group ahead of it is
/// done, so the backend is never left idle for it.
#[tokio::test]
async fn a_group_waiting_for_its_cohort_goes_when_the_group_ahead_is_done() {
    group_ahead_done_ends_the_wait(harness_waiting(2, Duration::from_secs(10))).await;
}

/// The same when the group ahead's outcome comes through a task on the
/// writer's own runtime, as PostgreSQL's answers do: the wait lets that
/// task run (before it did not, and the database sat idle for the rest
/// of the budget).
#[tokio::test]
async fn a_group_waiting_for_its_cohort_sees_an_outcome_relayed_on_the_writers_runtime() {
    group_ahead_done_ends_the_wait(harness_of(2, Duration::from_secs(10), true)).await;
}

async fn group_ahead_done_ends_the_wait(h: Harness) {
    let (c6, c7) = one_ahead_after_a_cohort_of_three(&h).await;
    assert!(still_asked(&h, 4).await, "it did not wait");
    let started = Instant::now();
    h.answer(3, ok());
    assert_eq!(h.asked(5).await[4], ("ahead", vec![7]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited out the budget"
    );
    c6.await.unwrap();
    h.answer(4, ok());
    c7.await.unwrap();
}

/// With `group-wait-us = 0` a group never waits.
#[tokio::test]
async fn without_a_group_wait_a_group_goes_at_once() {
    let h = harness_waiting(2, Duration::ZERO);
    let (c6, c7) = one_ahead_after_a_cohort_of_three(&h).await;
    assert_eq!(h.asked(5).await[4], ("ahead", vec![7]));
    h.answer(3, ok());
    h.answer(4, ok());
    c6.await.unwrap();
    c7.await.unwrap();
}

fn add_without_id(seq: u64) -> Record {
    Record::test_add(seq)
}

/// Submits a message to be dispatched while being stored, and waits for
/// its verdict (no duplicate).
async fn early(h: &Harness, seq: u64) -> Completion {
    let (c, v) = h
        .store
        .submit_early(vec![add_without_id(seq)])
        .await
        .unwrap();
    assert_eq!(v.await, Some(Duplicates::default()));
    c
}

/// Two messages dispatched while being stored fill the backend (two
/// groups in flight); returns their completions.
async fn fill_with_early(h: &Harness) -> (Completion, Completion) {
    let c1 = early(h, 1).await;
    h.asked(1).await;
    let c2 = early(h, 2).await;
    h.asked(2).await;
    (c1, c2)
}

/// Submitters whose messages acknowledgements cancelled had their answer
/// before their group's, so producers no longer come back in cohorts: while
/// that goes on, a group does not wait for its cohort.
#[tokio::test]
async fn no_cohort_wait_while_cancellations_release_submitters() {
    let h = harness_waiting(2, Duration::from_secs(10));
    let (c1, c2) = fill_with_early(&h).await;
    // Three more while the backend is full: one group, of which the
    // consumers' acknowledgements cancel two.
    let mut third = Vec::new();
    for seq in 3..=5 {
        third.push(early(&h, seq).await);
    }
    for seq in [4, 5] {
        h.store.record(vec![Record::Remove { seq }]).await.unwrap();
    }
    let c3 = third.remove(0);
    for c in third {
        tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("released by the cancellation")
            .unwrap();
    }
    h.answer(0, ok());
    h.answer(1, ok());
    assert_eq!(h.asked(3).await[2], ("ahead", vec![3]));
    h.answer(2, ok());
    for c in [c1, c2, c3] {
        c.await.unwrap();
    }
    // The last group answered had two of its three submitters released
    // before it: a lone one now goes at once beside the group ahead.
    let c6 = h.remove(6, 4).await;
    let c7 = h.submit(7).await;
    let log = tokio::time::timeout(Duration::from_secs(5), h.asked(5))
        .await
        .expect("the group waited for submitters already answered");
    assert_eq!(log[4], ("ahead", vec![7]));
    h.answer(3, ok());
    h.answer(4, ok());
    c6.await.unwrap();
    c7.await.unwrap();
}

/// Two messages dispatched while being stored fill the backend; a third
/// is checked for duplicates at once, while its group waits for room, and
/// its submitter told; the Remove of its consumer's acknowledgement then
/// cancels it: its completion resolves before any group is answered, and
/// only what keeps its duplicate-detection id (an emptied Add and its
/// Remove) ever reaches the backend.
async fn acknowledged_while_waiting_for_room(third: Record) -> Harness {
    let h = harness();
    let (mut c1, mut c2) = fill_with_early(&h).await;
    let (c3, v3) = h.store.submit_early(vec![third]).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), v3)
            .await
            .unwrap(),
        Some(Duplicates::default()),
        "the verdict comes while the backend is full"
    );
    h.store
        .record(vec![Record::Remove { seq: 3 }])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), c3)
        .await
        .expect("a cancelled message's submitter waits for no write")
        .unwrap();
    still_waiting(&mut c1).await;
    still_waiting(&mut c2).await;
    assert_eq!(h.store.stats().adds_cancelled.load(Ordering::Relaxed), 1);
    h.answer(0, ok());
    c1.await.unwrap();
    h.answer(1, ok());
    c2.await.unwrap();
    h
}

#[tokio::test]
async fn a_message_acknowledged_before_its_group_is_written_is_never_written() {
    let h = acknowledged_while_waiting_for_room(add_without_id(3)).await;
    // A later write shows the writer has passed the cancelled group.
    let mut c = h.submit(9).await;
    let log = h.asked(3).await;
    h.answer(2, ok());
    (&mut c).await.unwrap();
    assert_eq!(
        log,
        vec![("ahead", vec![1]), ("ahead", vec![2]), ("ahead", vec![9])],
        "neither the Add of 3 nor its Remove reached the backend"
    );
}

#[tokio::test]
async fn a_cancelled_message_leaves_its_duplicate_id_behind() {
    let h = acknowledged_while_waiting_for_room(add(3, "id-3")).await;
    let log = h.asked(3).await;
    assert_eq!(
        log[2],
        ("ahead", vec![3, 3]),
        "an emptied Add and its Remove"
    );
    h.answer(2, ok());
    // A resend of it is a duplicate.
    let (c, v) = h.store.submit_early(vec![add(4, "id-3")]).await.unwrap();
    assert_eq!(v.await, Some(Duplicates(vec![4])));
    h.asked(4).await;
    h.answer(3, ok());
    c.await.unwrap();
}

#[tokio::test]
async fn an_acknowledgement_after_the_write_began_is_written_after_it() {
    let h = harness();
    let (c, v) = h.store.submit_early(vec![add_without_id(5)]).await.unwrap();
    v.await.unwrap();
    h.asked(1).await;
    let mut removed = h
        .store
        .submit_acks(vec![Record::Remove { seq: 5 }])
        .await
        .unwrap();
    let log = h.asked(2).await;
    assert_eq!(log, vec![("ahead", vec![5]), ("ahead", vec![5])]);
    still_waiting(&mut removed).await;
    h.answer(0, ok());
    h.answer(1, ok());
    c.await.unwrap();
    removed.await.unwrap();
    assert_eq!(h.store.stats().adds_cancelled.load(Ordering::Relaxed), 0);
}

/// A Remove that is part of a batch that must take effect whole (moving a
/// message to the dead-letter queue; a transaction's commit goes through
/// `submit`) never cancels: it follows the Add instead.
#[tokio::test]
async fn a_remove_in_a_batch_with_other_records_does_not_cancel() {
    let h = harness();
    let (c1, c2) = fill_with_early(&h).await;
    let (c3, v3) = h.store.submit_early(vec![add_without_id(3)]).await.unwrap();
    v3.await.unwrap();
    let moved = vec![Record::Remove { seq: 3 }, add_without_id(4)];
    h.store.record(moved).await.unwrap();
    let committed = h
        .store
        .submit(vec![Record::Remove { seq: 2 }])
        .await
        .unwrap();
    h.answer(0, ok());
    h.answer(1, ok());
    // The commit may ride with the Add of 3 or with the move after it.
    let mut answered = 2;
    let mut waiting = vec![c3, committed];
    while !waiting.is_empty() {
        h.asked(answered + 1).await;
        h.answer(answered, ok());
        answered += 1;
        let mut still = Vec::new();
        for mut c in waiting {
            if tokio::time::timeout(Duration::from_millis(50), &mut c)
                .await
                .is_err()
            {
                still.push(c);
            }
        }
        waiting = still;
    }
    c1.await.unwrap();
    c2.await.unwrap();
    // The move, bookkeeping nobody waits for, follows within a moment.
    let threes = |log: &[(&str, Vec<u64>)]| {
        log[2..]
            .iter()
            .flat_map(|(_, s)| s.clone())
            .filter(|&s| s == 3)
            .count()
    };
    let log = loop {
        let log = h.asked(answered).await;
        if threes(&log) >= 2 {
            break log;
        }
        h.asked(answered + 1).await;
        h.answer(answered, ok());
        answered += 1;
    };
    assert_eq!(log[2].1[0], 3, "the Add of 3 is written first: {log:?}");
    assert_eq!(threes(&log), 2, "then its Remove, with the move: {log:?}");
    assert_eq!(h.store.stats().adds_cancelled.load(Ordering::Relaxed), 0);
}
