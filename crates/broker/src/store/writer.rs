//! The store's writer: the one owner of the backend, on a thread of its
//! own, gathering what is submitted into groups (one write and one sync
//! each), with bookkeeping parked to ride on them ([`Parked`]) and a short
//! poll for a producer about to send again ([`Spin`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, mpsc, oneshot};

use super::pending::{self, PendingAdds};
use super::{
    Ahead, AheadOutcome, Batch, Duplicates, Record, StoreBackend, StoreError, StoreKey, Usage,
    dedup,
};

pub(super) type Done = oneshot::Sender<Result<Duplicates, StoreError>>;

pub(super) enum Request {
    Write {
        batch: Batch,
        /// `None` for bookkeeping nobody waits for: it is written in order
        /// and becomes durable with the next sync. With when it was
        /// submitted (`store_wait_seconds`).
        done: Option<(Done, std::time::Instant)>,
        /// For new messages dispatched while being stored
        /// ([`Store::submit_early`](super::Store::submit_early)): where the
        /// duplicates found go once the batch is checked, before its write.
        early: Option<oneshot::Sender<Duplicates>>,
    },
    /// Finish what is queued, then stop.
    Close { done: oneshot::Sender<()> },
}

/// Bookkeeping batches parked for the writer's next pass.
#[derive(Default)]
pub(super) struct Parked {
    batches: std::sync::Mutex<Vec<Batch>>,
    count: std::sync::atomic::AtomicUsize,
    /// The writer has waited `LAZY_DELAY` without work and now sleeps until
    /// a request comes or `wake` is notified. Only then does parking wake
    /// it: a writer that has just finished a group looks at the parked
    /// batches within `LAZY_DELAY` anyway, so the consumer whose
    /// acknowledgement is parked does not pay for a wake-up of the writer's
    /// thread (nor does the producer whose SEND follows, on a busy
    /// machine).
    sleeping: std::sync::atomic::AtomicBool,
    /// Wakes a sleeping writer when the first batch is parked, so that it
    /// goes to disk within `LAZY_DELAY` even if no durable write comes
    /// along.
    wake: Notify,
}

/// Most parked batches; beyond it bookkeeping goes through the channel
/// (and waits, like everything else, if the writer is behind).
const PARKED_MAX: usize = 4096;
/// How long parked bookkeeping may wait for a durable write to ride on.
const LAZY_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

impl Parked {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Batch>> {
        // Pushing and taking leave the vector consistent at all times.
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parks a batch, or hands it back if too many are parked.
    pub(super) fn park(&self, batch: Batch) -> Result<(), Batch> {
        if self.count.load(Ordering::Relaxed) >= PARKED_MAX {
            return Err(batch);
        }
        self.lock().push(batch);
        // SeqCst, paired with `sleep`: either the writer sees this batch
        // before it sleeps, or this sees it asleep and wakes it.
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 && self.sleeping.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    fn take(&self) -> Vec<Batch> {
        let taken = std::mem::take(&mut *self.lock());
        self.count.fetch_sub(taken.len(), Ordering::SeqCst);
        taken
    }

    /// The idle writer's wait: the next request, or `None` once something
    /// is parked (or the channel is closed). For `LAZY_DELAY` it waits
    /// without telling parkers, so they need not wake it; then, if nothing
    /// is parked, it sleeps until a request comes or a parker wakes it.
    async fn sleep(&self, rx: &mut mpsc::Receiver<Request>) -> Option<Request> {
        if let Ok(r) = tokio::time::timeout(LAZY_DELAY, rx.recv()).await {
            return r;
        }
        if !self.is_empty() {
            return None;
        }
        self.sleeping.store(true, Ordering::SeqCst);
        let r = if self.is_empty() {
            tokio::select! {
                r = rx.recv() => r,
                () = self.wake.notified() => None,
            }
        } else {
            None
        };
        self.sleeping.store(false, Ordering::SeqCst);
        r
    }
}

/// Whether the idle writer polls for the next batch before it sleeps.
///
/// A producer that waits for each confirmation before it sends again (a
/// synchronous JMS producer; a STOMP client asking a receipt for each
/// SEND) sends its next batch some tens of microseconds after its last was
/// confirmed. A writer asleep by then must be woken, through its runtime's
/// event fd and the kernel's wake-up of an idle CPU, which on a virtual
/// machine costs about as much again: a quarter of what the disk's sync
/// leaves (issue #19's goal 1). Polling for a short while, yielding the CPU
/// to any thread that is ready, catches the batch as it comes.
///
/// It polls only while that pays: while the last gap between a confirmed
/// group and the next batch was within the budget. A sparse or idle broker
/// so spins at most once per quiet spell, and a busy one finds its next
/// group waiting and never needs to.
pub(super) struct Spin {
    budget: std::time::Duration,
    pays: bool,
    confirmed_at: Option<std::time::Instant>,
}

impl Spin {
    pub(super) fn new(budget: std::time::Duration) -> Spin {
        Spin {
            budget,
            pays: !budget.is_zero(),
            confirmed_at: None,
        }
    }

    /// The next request, polling for it for up to the budget if that pays.
    /// (Parked bookkeeping waits for a durable write to ride on anyway.)
    fn poll(&self, rx: &mut mpsc::Receiver<Request>) -> Result<Request, mpsc::error::TryRecvError> {
        let mut got = rx.try_recv();
        if self.pays && matches!(got, Err(mpsc::error::TryRecvError::Empty)) {
            let until = std::time::Instant::now() + self.budget;
            while matches!(got, Err(mpsc::error::TryRecvError::Empty))
                && std::time::Instant::now() < until
            {
                // Yielding, not spinning: on a small machine the thread
                // that will send the batch (or deliver the last one to a
                // consumer) may need this CPU. Measured: spinning made
                // scenario a slower with a consumer; yielding faster.
                std::thread::yield_now();
                got = rx.try_recv();
            }
        }
        got
    }

    /// A group someone waited for was confirmed just now.
    fn confirmed(&mut self) {
        self.confirmed_at = Some(std::time::Instant::now());
    }

    /// A batch came: was it soon enough after the last confirmation for
    /// the next wait to be spent polling?
    fn arrived(&mut self) {
        if let Some(at) = self.confirmed_at.take() {
            self.pays = !self.budget.is_zero() && at.elapsed() <= self.budget;
        }
    }
}

/// Most batches handed to the backend in one call.
const MAX_GROUP: usize = 4096;

/// Synced groups after the last one that had submitters released by
/// cancellations before the cohort wait resumes ([`Writer::wait_for_cohort`]).
const RELEASE_MEMORY: u32 = 16;
/// Most bytes of new messages gathered into one group (beyond its first
/// batch, which goes whole). A backend turns a group into one write (the
/// journal copies it into one buffer) or one transaction (PostgreSQL takes
/// at most 1 GiB in one statement): with bodies of up to 100 MiB, a group
/// of every batch that queued up could otherwise reach gigabytes. 8 MiB
/// keeps the disk as busy (a group this size takes longer to write than
/// to gather) while bounding the broker's memory when producers outrun the
/// disk: the group's buffer was most of scenario e's peak at 64 MiB.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// How the writer reports that the store failed for good.
pub(super) struct Failure {
    pub(super) token: tokio_util::sync::CancellationToken,
    pub(super) error: Arc<std::sync::OnceLock<StoreError>>,
}

impl Failure {
    fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    fn fail(&self, e: &StoreError) {
        let _ = self.error.set(e.clone());
        self.token.cancel();
    }
}

/// Whether a batch stores new data (rather than only freeing or
/// annotating what is stored).
pub(super) fn adds_data(batch: &Batch) -> bool {
    batch.iter().any(|r| matches!(r, Record::Add { .. }))
}

/// Bytes of the new messages in a batch.
pub(super) fn added_bytes(batch: &Batch) -> usize {
    batch
        .iter()
        .map(|r| match r {
            Record::Add { message, .. } => message.weight(),
            _ => 0,
        })
        .sum()
}

/// Runs the backend's upkeep once; says whether more is pending. A fenced
/// store fails for good; any other failure waits for the next write.
async fn maintain<B: StoreBackend>(backend: &mut B, failed: &Failure) -> bool {
    match backend.maintain().await {
        Ok(more) => more,
        Err(e) => {
            tracing::error!(error = %e, "store upkeep failed");
            if matches!(e, StoreError::Fenced(_)) {
                failed.fail(&e);
            }
            false
        }
    }
}

/// A group handed to the backend, with what answering it needs.
struct Group {
    batches: Vec<Batch>,
    waiters: Vec<Option<Done>>,
    /// The duplicates found in each batch.
    found: Vec<Duplicates>,
    /// The duplicate-detection ids it made known, forgotten if it fails.
    added: Vec<(StoreKey, Arc<str>)>,
    /// The Adds in it dispatched while being stored, tracked until it is
    /// answered.
    tracked: Vec<u64>,
    /// Whether anyone waits for it (it is synced).
    sync: bool,
    /// Whether it goes to the backend: not if acknowledgements cancelled
    /// all it had.
    written: bool,
    /// Whether some of its submitters had their answer before it, when
    /// acknowledgements cancelled every Add of their batch: producers then
    /// no longer come back in cohorts ([`Writer::wait_for_cohort`]).
    released: bool,
    started: std::time::Instant,
}

/// The writer's state: the backend it owns and what it remembers between
/// groups.
pub(super) struct Writer<B> {
    backend: B,
    stats: Arc<Usage>,
    failed: Failure,
    dups: dedup::DupIndex,
    spin: Spin,
    /// Groups sent ahead, oldest first, answered in this order.
    ahead: VecDeque<(Group, Ahead)>,
    /// Most groups handed to the backend and not yet answered
    /// (`store.groups-in-flight`; at least 1).
    in_flight: usize,
    /// `store.group-wait-us`: how long a group waits for its cohort while
    /// the group ahead of it is at the backend ([`Writer::wait_for_cohort`]).
    group_wait: std::time::Duration,
    /// How many submitters the last synced group answered.
    cohort: usize,
    /// Synced groups answered since one whose submitters included some
    /// released before it, by acknowledgements that cancelled their Adds.
    unreleased: u32,
    /// Adds dispatched while being stored, which acknowledgements may
    /// cancel until their group goes to the backend.
    pending: Arc<PendingAdds>,
    /// Whether the last group someone waited for held batches dispatched
    /// while being stored: then the next group takes batches in while it
    /// waits for room at the backend ([`Writer::wait_for_room`]).
    early_traffic: bool,
}

/// What the writer shares with the store's handle.
pub(super) struct Shared {
    pub(super) stats: Arc<Usage>,
    pub(super) failed: Failure,
    pub(super) pending: Arc<PendingAdds>,
}

impl<B: StoreBackend> Writer<B> {
    pub(super) fn new(
        backend: B,
        shared: Shared,
        dups: dedup::DupIndex,
        spin: Spin,
        in_flight: usize,
        group_wait: std::time::Duration,
    ) -> Writer<B> {
        let Shared {
            stats,
            failed,
            pending,
        } = shared;
        Writer {
            backend,
            stats,
            failed,
            dups,
            spin,
            ahead: VecDeque::new(),
            in_flight: in_flight.max(1),
            group_wait,
            cohort: 0,
            unreleased: RELEASE_MEMORY,
            pending,
            early_traffic: false,
        }
    }

    /// Takes a request into the group being gathered; says whether the
    /// group may take more. A batch dispatched while being stored is
    /// checked for duplicates now, and its submitter told, so that its
    /// copies reach their consumers while the group waits for its turn —
    /// unless a group ahead, which may yet fail, holds one of its ids: then
    /// it is checked with the rest of the group, when that group is written.
    fn take(&mut self, group: &mut Gathered, req: Request) -> bool {
        let (mut batch, done, early) = match req {
            Request::Write { batch, done, early } => (batch, done, early),
            Request::Close { done } => {
                group.closing = Some(done);
                return false;
            }
        };
        let mut found = None;
        if let Some(verdict) = early {
            group.tracked.extend(pending::added(&batch));
            group.early.push(group.batches.len());
            if self.ahead.is_empty() || !self.dups.knows_any(std::slice::from_ref(&batch)) {
                let (mut dups, added) = self.dups.filter(std::slice::from_mut(&mut batch));
                let dups = dups.pop().unwrap_or_default();
                group.added.extend(added);
                // A submitter that went away dispatches nothing.
                let _ = verdict.send(dups.clone());
                found = Some(dups);
            }
        }
        group.bytes += added_bytes(&batch);
        let done = done.map(|(done, at)| {
            group.since.push(at);
            done
        });
        group.batches.push(batch);
        group.waiters.push(done);
        group.found.push(found);
        group.is_open()
    }

    /// Writes a gathered group: sent ahead if the backend can, else (after
    /// every group ahead is answered) written and answered now.
    async fn write(&mut self, gathered: Gathered) {
        let Gathered {
            mut batches,
            waiters,
            found,
            mut added,
            tracked,
            early,
            ..
        } = gathered;
        let unchecked = || found.iter().zip(&batches).filter(|(f, _)| f.is_none());
        if !self.ahead.is_empty()
            && unchecked().any(|(_, b)| self.dups.knows_any(std::slice::from_ref(b)))
        {
            // Whether its copies are duplicates depends on the groups ahead
            // succeeding: wait for their answers first.
            self.drain().await;
        }
        let sync = waiters.iter().flatten().next().is_some();
        let found: Vec<Duplicates> = found
            .into_iter()
            .zip(batches.iter_mut())
            .map(|(f, batch)| {
                f.unwrap_or_else(|| {
                    let (mut dups, more) = self.dups.filter(std::slice::from_mut(batch));
                    added.extend(more);
                    dups.pop().unwrap_or_default()
                })
            })
            .collect();
        self.stats
            .duplicate_ids
            .store(self.dups.len() as u64, Ordering::Relaxed);
        // From here on an acknowledgement no longer cancels these Adds;
        // those it cancelled are not written.
        let records = |b: &[Batch]| b.iter().map(Vec::len).sum::<usize>();
        let before = records(&batches);
        let mut released = false;
        for &i in &early {
            released |= self.pending.write(&mut batches[i]) && waiters[i].is_some();
        }
        let cancelled_all = records(&batches) == 0 && before > 0;
        if !early.is_empty() || sync {
            self.early_traffic = !early.is_empty();
        }
        let group = Group {
            batches,
            waiters,
            found,
            added,
            tracked,
            sync,
            written: !cancelled_all,
            released,
            started: std::time::Instant::now(),
        };
        if cancelled_all {
            // Nothing left to write (acknowledgements cancelled it all):
            // answered in turn, after the groups ahead of it.
            let done: Ahead = Box::pin(std::future::ready(AheadOutcome::Done(Ok(()))));
            self.ahead.push_back((group, done));
            return;
        }
        if self.in_flight > 1
            && !self.failed.is_cancelled()
            && let Some(ahead) = self.backend.send_ahead(&group.batches, sync)
        {
            self.ahead.push_back((group, ahead));
            if !self.early_traffic && self.at_backend() >= self.in_flight {
                // Nothing dispatched while being stored: the next group
                // gathers once this one has room, from what came meanwhile
                // (otherwise, the next group takes batches in as they
                // come: [`Writer::wait_for_room`]).
                self.answer_oldest().await;
            }
            return;
        }
        self.drain().await;
        let result = self.write_alone(&group).await;
        self.answer(group, result).await;
    }

    /// Writes a group with nothing else at the backend (unless the store
    /// has failed for good).
    async fn write_alone(&mut self, group: &Group) -> Result<(), StoreError> {
        if self.failed.is_cancelled() {
            return Err(StoreError::Failed("the store failed earlier".into()));
        }
        self.backend.write(&group.batches, group.sync).await
    }

    /// Waits a little for more of a group's submitters, while the group
    /// ahead of it is still at the backend (so the database is busy
    /// anyway).
    ///
    /// Producers that wait for each receipt come back in cohorts: those a
    /// group answered send again together, some tens of microseconds
    /// apart. With a group sent ahead, the first of them to arrive would
    /// otherwise leave alone (or with a few) while the rest queue behind
    /// it, and 16 producers settle into two cohorts of 8, each a commit of
    /// its own; a commit costs PostgreSQL about as much as 30 messages in
    /// it (`bench/pg-group.sh`). Waiting until as many submitters as the
    /// last group answered are in, but never after the group ahead is
    /// done and never beyond the budget, makes the groups larger without
    /// leaving the database idle.
    ///
    /// Not while consumers' acknowledgements cancel Adds dispatched while
    /// being stored: their producers have their receipts before the group
    /// is answered and send again at once, so the producers no longer come
    /// back together, and the wait, spent yielding, only delays the
    /// group and takes CPU from the database (b on PostgreSQL, 16 + 16:
    /// 17.0-17.4 k messages a second with the wait, 19.2-20.0 k without).
    async fn wait_for_cohort(&mut self, rx: &mut mpsc::Receiver<Request>, group: &mut Gathered) {
        if self.group_wait.is_zero()
            || self.unreleased < RELEASE_MEMORY
            || group.waiting() == 0
            || group.waiting() >= self.cohort
            || self.ahead.is_empty()
        {
            return;
        }
        let until = std::time::Instant::now() + self.group_wait;
        while group.waiting() < self.cohort
            && std::time::Instant::now() < until
            && !self.front_done()
        {
            match rx.try_recv() {
                Ok(req) => {
                    if !self.take(group, req) {
                        return;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Yielding, not spinning: the producers' threads and the
                    // database may need this CPU.
                    std::thread::yield_now();
                    // And yielding to this thread's runtime: the database
                    // connection's task, which reads the answer of the
                    // group ahead, runs only then, and until it has,
                    // `front_done` cannot see it (so the database would sit
                    // idle for the rest of the budget).
                    tokio::task::yield_now().await;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Groups at the backend (not those answered in turn without a write).
    fn at_backend(&self) -> usize {
        self.ahead.iter().filter(|(g, _)| g.written).count()
    }

    /// While as many groups as may be are at the backend, the next one
    /// waits for room, taking in what comes meanwhile: the batches
    /// dispatched while being stored get their verdict now, so that their
    /// messages reach consumers whose acknowledgements may cancel them
    /// before this group is written. Says whether it waited.
    async fn wait_for_room(
        &mut self,
        rx: &mut mpsc::Receiver<Request>,
        group: &mut Gathered,
    ) -> bool {
        let mut waited = false;
        while self.at_backend() >= self.in_flight {
            let Some((_, ahead)) = self.ahead.front_mut() else {
                break;
            };
            waited = true;
            let open = group.is_open();
            tokio::select! {
                biased;
                outcome = ahead => {
                    if let Some((done, _)) = self.ahead.pop_front() {
                        self.settle(done, outcome).await;
                    }
                }
                r = rx.recv(), if open => match r {
                    Some(req) => {
                        self.take(group, req);
                    }
                    // Closed: the group goes once there is room.
                    None => group.ended = true,
                },
            }
        }
        waited
    }

    /// Whether the oldest group ahead has its outcome (kept for
    /// `answer_oldest`): looked at without waiting.
    fn front_done(&mut self) -> bool {
        let Some((_, ahead)) = self.ahead.front_mut() else {
            return true;
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match ahead.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(outcome) => {
                *ahead = Box::pin(std::future::ready(outcome));
                true
            }
            std::task::Poll::Pending => false,
        }
    }

    /// Waits for the oldest group ahead and answers it.
    async fn answer_oldest(&mut self) {
        let Some((group, ahead)) = self.ahead.pop_front() else {
            return;
        };
        let outcome = ahead.await;
        self.settle(group, outcome).await;
    }

    /// Answers every group ahead, in order.
    async fn drain(&mut self) {
        while !self.ahead.is_empty() {
            self.answer_oldest().await;
        }
    }

    /// Answers a group sent ahead once its outcome is known.
    async fn settle(&mut self, group: Group, outcome: AheadOutcome) {
        let result = match outcome {
            AheadOutcome::Done(r) => r,
            AheadOutcome::Again => {
                // Nothing sent on the broken connection may still be under
                // way while this group is written again: the groups behind
                // it learn their fate first (and are written again in turn).
                for (_, ahead) in &mut self.ahead {
                    let later = ahead.as_mut().await;
                    *ahead = Box::pin(std::future::ready(later));
                }
                self.write_alone(&group).await
            }
        };
        self.answer(group, result).await;
    }

    /// Tells a group's submitters its result (after freeing what it could
    /// if the store was short of space).
    async fn answer(&mut self, group: Group, result: Result<(), StoreError>) {
        let Group {
            batches,
            waiters,
            found,
            added,
            tracked,
            mut sync,
            written,
            released,
            started,
        } = group;
        self.pending.settle(tracked);
        let waiting = waiters.iter().flatten().count();
        // Not written: not a group commit.
        let confirmed = sync;
        sync &= written;
        // Counted once the backend is done with the group, so that a
        // count seen means the write has happened (a test kills the
        // broker right after it sees a delivery count's write).
        let stats = &self.stats;
        stats
            .groups
            .fetch_add(u64::from(written), Ordering::Relaxed);
        stats
            .synced_groups
            .fetch_add(u64::from(sync), Ordering::Relaxed);
        stats
            .synced_batches
            .fetch_add(waiting as u64, Ordering::Relaxed);
        stats
            .lazy_batches
            .fetch_add((batches.len() - waiting) as u64, Ordering::Relaxed);
        if sync && result.is_ok() {
            self.stats.sync_seconds.observe_duration(started.elapsed());
            self.stats.group_batches.observe(waiting as u64);
        }
        // Refused for want of space (a full disk): the batches without
        // new messages (acknowledgements) go in on their own, or nothing
        // could ever free space.
        let mut freeing: Option<(Vec<bool>, Result<(), StoreError>)> = None;
        if let Err(StoreError::Unavailable { .. }) = &result {
            let adds: Vec<bool> = batches.iter().map(adds_data).collect();
            if adds.iter().any(|a| !a) && adds.iter().any(|a| *a) {
                let rest: Vec<Batch> = batches
                    .iter()
                    .zip(&adds)
                    .filter(|(_, a)| !**a)
                    .map(|(b, _)| b.clone())
                    .collect();
                let retried = self.backend.write(&rest, sync).await;
                freeing = Some((adds, retried));
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, batches = batches.len(), "store write failed");
            self.dups.roll_back(added);
        }
        for e in [Some(&result), freeing.as_ref().map(|(_, r)| r)]
            .into_iter()
            .flatten()
        {
            if let Err(e) = e
                && e.is_fatal()
            {
                tracing::error!(error = %e, "the store failed");
                self.failed.fail(e);
            }
        }
        for (i, (w, found)) in waiters.into_iter().zip(found).enumerate() {
            // A submitter that went away no longer needs the answer.
            if let Some(w) = w {
                let r = match &freeing {
                    Some((adds, retried)) if !adds[i] => retried,
                    _ => &result,
                };
                let _ = w.send(r.clone().map(|()| found));
            }
        }
        if confirmed {
            self.spin.confirmed();
        }
        if sync {
            self.cohort = waiting;
            self.unreleased = if released {
                0
            } else {
                self.unreleased.saturating_add(1)
            };
        }
    }
}

/// What the writer has gathered for its next group.
#[derive(Default)]
struct Gathered {
    batches: Vec<Batch>,
    waiters: Vec<Option<Done>>,
    /// When each of `waiters` that someone waits on was submitted.
    since: Vec<std::time::Instant>,
    /// For each batch, the duplicates found in it if it was checked as it
    /// came (dispatched while being stored).
    found: Vec<Option<Duplicates>>,
    /// The duplicate-detection ids those checks made known.
    added: Vec<(StoreKey, Arc<str>)>,
    /// The batches dispatched while being stored, by index.
    early: Vec<usize>,
    /// The Adds in them.
    tracked: Vec<u64>,
    /// Bytes of new messages.
    bytes: usize,
    /// A close request, which ends the gathering.
    closing: Option<oneshot::Sender<()>>,
    /// The channel was closed while it gathered.
    ended: bool,
}

impl Gathered {
    /// How many of `waiters` someone waits on.
    fn waiting(&self) -> usize {
        self.since.len()
    }

    /// Whether it may take more.
    fn is_open(&self) -> bool {
        self.closing.is_none()
            && !self.ended
            && self.batches.len() < MAX_GROUP
            && self.bytes < MAX_GROUP_BYTES
    }

    /// Adds bookkeeping nobody waits for.
    fn park(&mut self, batch: Batch) {
        self.batches.push(batch);
        self.waiters.push(None);
        self.found.push(None);
    }
}

pub(super) async fn writer<B: StoreBackend>(
    mut w: Writer<B>,
    mut rx: mpsc::Receiver<Request>,
    parked: Arc<Parked>,
) {
    let mut upkeep = true;
    let closing = loop {
        if !w.failed.is_cancelled() && w.backend.upkeep_overdue() {
            // Busy since long before: the upkeep goes between two groups.
            w.drain().await;
            maintain(&mut w.backend, &w.failed).await;
        }
        let first = if let Some((_, ahead)) = w.ahead.front_mut() {
            // A group is at the backend: its answer, or the next request
            // to send ahead behind it.
            tokio::select! {
                biased;
                outcome = ahead => {
                    if let Some((group, _)) = w.ahead.pop_front() {
                        w.settle(group, outcome).await;
                    }
                    continue;
                }
                r = rx.recv() => r,
            }
        } else {
            match w.spin.poll(&mut rx) {
                Ok(r) => Some(r),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if !parked.is_empty() => {
                    // Give parked bookkeeping a moment to ride on a durable write.
                    tokio::time::timeout(LAZY_DELAY, rx.recv())
                        .await
                        .unwrap_or_default()
                }
                Err(mpsc::error::TryRecvError::Empty) if upkeep && !w.failed.is_cancelled() => {
                    upkeep = maintain(&mut w.backend, &w.failed).await;
                    continue;
                }
                // Idle: the next request, or what was parked meanwhile.
                Err(mpsc::error::TryRecvError::Empty) => parked.sleep(&mut rx).await,
            }
        };
        let disconnected = first.is_none() && rx.is_closed() && rx.is_empty();
        if matches!(first, Some(Request::Write { .. })) {
            w.spin.arrived();
        }
        let mut group = Gathered::default();
        for batch in parked.take() {
            group.park(batch);
        }
        let mut open = true;
        if let Some(req) = first {
            open = w.take(&mut group, req);
            while open && let Ok(req) = rx.try_recv() {
                open = w.take(&mut group, req);
            }
        }
        if open {
            w.wait_for_cohort(&mut rx, &mut group).await;
        }
        // The group that made room has its producers coming back: the
        // group waits for them as for any cohort.
        if w.wait_for_room(&mut rx, &mut group).await && group.is_open() {
            w.wait_for_cohort(&mut rx, &mut group).await;
        }
        let disconnected = disconnected || group.ended;
        let closing = group.closing.take();
        if !group.batches.is_empty() {
            for at in &group.since {
                w.stats.wait_seconds.observe_duration(at.elapsed());
            }
            w.write(group).await;
            upkeep = true;
        }
        if closing.is_some() || disconnected {
            break closing;
        }
    };
    w.drain().await;
    // Nothing tracked will be written now: a reader waiting for one stops.
    w.pending.clear();
    let Writer {
        mut backend,
        failed,
        ..
    } = w;
    if !failed.is_cancelled() {
        backend.close().await;
    }
    drop(backend);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_writer_polls_only_while_the_gaps_it_sees_are_short() {
        let budget = std::time::Duration::from_millis(20);
        let mut spin = Spin::new(budget);
        assert!(spin.pays, "a writer with a budget starts out polling");
        spin.confirmed();
        spin.arrived();
        assert!(spin.pays, "a batch right after a confirmation");
        spin.confirmed();
        // The gap itself is what is under test.
        std::thread::sleep(budget * 2);
        spin.arrived();
        assert!(!spin.pays, "a gap longer than the budget");
        spin.confirmed();
        spin.arrived();
        assert!(spin.pays, "short gaps again");
        assert!(!Spin::new(std::time::Duration::ZERO).pays, "0: never");
    }
}
