//! A connection's completion pipeline: the ordered queue of pending work
//! whose outcome the client waits for (a STOMP RECEIPT, an OpenWire
//! response).
//!
//! Each job is a future that completes one request (wait for the store,
//! hand the message to its destination, …) and yields what the protocol
//! head sends back. A task of its own, tracked by the broker so shutdown
//! waits for it, runs the jobs one after another, so
//! - outcomes come back in request order, and a producer's messages reach
//!   each destination in the order it sent them;
//! - a destination applying flow control delays this connection's later
//!   outcomes but never its deliveries, acknowledgements or heart-beats,
//!   which the protocol session keeps handling meanwhile (a connection that
//!   both produces to and consumes from a full queue can still drain it).
//!
//! The session stops reading requests while `limits.max-inflight-frames`
//! jobs or `limits.max-inflight-bytes` bytes (bodies and the work that
//! delivers them) are pending: that is where
//! backpressure reaches the producer. Both channels are sized so the job
//! count can never exceed their capacity, so neither side ever waits on the
//! other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::{ServiceError, Work};

/// A request's pending work (if any), with what the protocol head wants
/// back when it is done (`T`: say, the receipt to send).
struct Queued<T> {
    work: Option<Work>,
    tag: T,
    bytes: usize,
}

/// A finished job.
struct Finished<T> {
    tag: T,
    result: Result<(), ServiceError>,
    bytes: usize,
}

/// How many jobs are being waited for now, in every connection's
/// pipeline. A lone job is polled only while it is the only one, so at
/// most one connection polls at a time, and only when nothing else is
/// waited for: when other jobs wait too, their completions keep the
/// runtime's threads awake, so a wake-up costs little, and a thread spent
/// polling is taken from work that needs it. (Polling whenever a job was
/// alone in its own connection, with 16 synchronous producers and their
/// consumers, cut the rate from 22 k to 7 k messages a second on the
/// journal and from 11.8 k to 4.2 k on PostgreSQL.)
struct Waiters(AtomicUsize);

/// The broker's one count.
static WAITERS: Waiters = Waiters(AtomicUsize::new(0));

impl Waiters {
    /// Counts a job in until the guard is dropped (even if the job
    /// panics); returns how many wait now, this one included.
    fn enter(&'static self) -> (Waiting, usize) {
        (Waiting(self), self.0.fetch_add(1, Ordering::AcqRel) + 1)
    }

    fn others(&self) -> bool {
        self.0.load(Ordering::Acquire) > 1
    }
}

/// One job counted in [`Waiters`].
struct Waiting(&'static Waiters);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a pipeline waits for a job that is alone in it (see
/// `store.confirm-spin-us`).
///
/// A producer that waits for each confirmation (a synchronous JMS
/// producer, a STOMP client asking a receipt for each SEND) has one job
/// pending at a time, and it waits for the store's sync. A task that
/// sleeps meanwhile is woken by the store's thread when the sync is done,
/// through the runtime's unpark of an idle thread, which on a virtual
/// machine costs a good part of what the sync itself does (issue #19's
/// goal 1: with it, one synchronous producer got 63-87 % of `sync_floor`
/// here; polling, 88-99 %). Polling for a short while, yielding the CPU to
/// any thread that is ready, sees the job done as soon as it is, and the
/// confirmation goes out at once.
///
/// It polls only while that pays: while no other job is waited for (see
/// [`Waiters`]), and while the last lone job was done
/// within the budget. A job that waits longer (a full store, flow control,
/// a slow disk) costs one budget, and the next job sleeps at once.
struct LoneJob {
    budget: Duration,
    pays: bool,
    waiters: &'static Waiters,
    /// Jobs seen done while polled.
    caught: u64,
}

impl LoneJob {
    fn new(budget: Duration, waiters: &'static Waiters) -> LoneJob {
        LoneJob {
            budget,
            pays: !budget.is_zero(),
            waiters,
            caught: 0,
        }
    }

    async fn run(&mut self, mut work: Work) -> Result<(), ServiceError> {
        let started = Instant::now();
        let (_waiting, waiting) = self.waiters.enter();
        if self.pays && waiting == 1 {
            let until = started + self.budget;
            let polled = std::future::poll_fn(|cx| {
                loop {
                    if self.waiters.others() {
                        return Poll::Ready(None);
                    }
                    if let Poll::Ready(r) = work.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    if Instant::now() >= until {
                        return Poll::Ready(None);
                    }
                    // Yielding, not spinning: on a small machine the
                    // store's thread, finishing the sync, may need this CPU.
                    std::thread::yield_now();
                }
            })
            .await;
            if let Some(r) = polled {
                self.caught += 1;
                return r;
            }
        }
        let r = work.await;
        self.pays = !self.budget.is_zero() && started.elapsed() <= self.budget;
        r
    }
}

/// The pipeline refused a job: more were queued than the session allowed
/// itself to read. A bug in the session, reported rather than dropped so
/// the connection is closed instead of left waiting for an outcome that
/// never comes.
#[derive(Debug, thiserror::Error)]
#[error("the connection's pipeline is full ({0} jobs pending): request refused")]
pub(crate) struct Overflow(usize);

pub(crate) struct Pipeline<T> {
    /// The task and its channels, started with the first job: most of a
    /// connection's idle cost otherwise (each channel allocates a block of
    /// slots up front), paid by every connection that never sends one.
    running: Option<Running<T>>,
    /// Closed: jobs pushed now are dropped.
    closed: bool,
    tasks: TaskTracker,
    pending: usize,
    /// `pending`, for the operators' directory of connections (read from
    /// another task, so an atomic).
    shown: Arc<AtomicUsize>,
    bytes: usize,
    max_jobs: usize,
    max_bytes: usize,
    /// How long a lone job is polled before the task sleeps ([`LoneJob`]).
    spin: Duration,
}

/// A started pipeline's ends.
struct Running<T> {
    jobs: Option<mpsc::Sender<Queued<T>>>,
    finished: mpsc::Receiver<Finished<T>>,
}

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline that lets `max_jobs` jobs or `max_bytes` bytes be pending
    /// and polls a lone job for up to `spin` (`store.confirm-spin-us`).
    pub(crate) fn new(
        max_jobs: usize,
        max_bytes: usize,
        spin: Duration,
        tasks: &TaskTracker,
    ) -> Pipeline<T> {
        Pipeline {
            running: None,
            closed: false,
            tasks: tasks.clone(),
            pending: 0,
            shown: Arc::default(),
            bytes: 0,
            max_jobs,
            max_bytes,
            spin,
        }
    }

    /// Starts the task that runs the jobs.
    fn start(&mut self) -> &mut Running<T> {
        self.running.get_or_insert_with(|| {
            let (jobs, mut job_rx) = mpsc::channel::<Queued<T>>(self.max_jobs + 1);
            let (done_tx, finished) = mpsc::channel(self.max_jobs + 1);
            let spin = self.spin;
            self.tasks.spawn(async move {
                let mut lone = LoneJob::new(spin, &WAITERS);
                while let Some(job) = job_rx.recv().await {
                    let result = match job.work {
                        Some(work) if job_rx.is_empty() => lone.run(work).await,
                        Some(work) => {
                            let _waiting = WAITERS.enter();
                            work.await
                        }
                        None => Ok(()),
                    };
                    // If the session has gone, keep going anyway: the client's
                    // messages still reach their destinations.
                    let _ = done_tx.try_send(Finished {
                        tag: job.tag,
                        result,
                        bytes: job.bytes,
                    });
                }
            });
            Running {
                jobs: Some(jobs),
                finished,
            }
        })
    }

    /// Requests pending now, kept current for whoever holds this (the
    /// connection's listing in the directory).
    pub(crate) fn pending_gauge(&self) -> Arc<AtomicUsize> {
        self.shown.clone()
    }

    /// Whether the session may read another request.
    pub(crate) fn has_room(&self) -> bool {
        self.pending < self.max_jobs && self.bytes < self.max_bytes
    }

    /// Body bytes of requests whose work is pending.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.pending == 0
    }

    /// Queues `work` (none: just `tag`, due once every earlier job is
    /// done); `bytes` counts toward the in-flight byte limit.
    pub(crate) fn push(
        &mut self,
        bytes: usize,
        work: Option<Work>,
        tag: T,
    ) -> Result<(), Overflow> {
        if self.closed {
            // Closed: the connection is ending and nobody will read this.
            return Ok(());
        }
        // A pending message holds its body and its work: the future that
        // delivers it, 1-3 KiB (more than a small body). Both count toward
        // `max-inflight-bytes`, or 16 held-back producers of 1 KiB messages
        // held three times what the limit suggests (issue #19, ow-d). Work
        // without a body (an acknowledgement) still counts nothing, so it is
        // never held back by the memory budget.
        let bytes = match &work {
            Some(w) if bytes > 0 => bytes + std::mem::size_of_val(&**w),
            _ => bytes,
        };
        let Some(jobs) = &self.start().jobs else {
            return Ok(());
        };
        if jobs.try_send(Queued { work, tag, bytes }).is_err() {
            return Err(Overflow(self.pending));
        }
        self.pending += 1;
        self.shown.store(self.pending, Ordering::Relaxed);
        self.bytes += bytes;
        Ok(())
    }

    /// Waits for the next finished job: its tag and how its work went.
    pub(crate) async fn next(&mut self) -> Option<(T, Result<(), ServiceError>)> {
        // Never started: nothing will finish.
        let done = self.running.as_mut()?.finished.recv().await?;
        self.pending -= 1;
        self.shown.store(self.pending, Ordering::Relaxed);
        self.bytes -= done.bytes;
        Some((done.tag, done.result))
    }

    /// Lets the pipeline finish what it has and end.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        if let Some(r) = &mut self.running {
            r.jobs = None;
        }
    }

    /// Whether the session may read another request: there is room and,
    /// while the broker is over its memory budget, none of this
    /// connection's message bodies is pending (a producer waits, reading
    /// nothing more, while a consumer's acknowledgements, which carry no
    /// message, still get through).
    pub(crate) fn may_read(&self, memory: &crate::memory::MemoryBudget) -> bool {
        self.has_room() && (self.pending_bytes() == 0 || !memory.over())
    }

    /// The session is ending: the pipeline finishes what it has, and the
    /// connection gives back everything it held (transactions roll back,
    /// subscriptions end and their unacknowledged messages are redelivered,
    /// temporary destinations are deleted).
    pub(crate) async fn release(&mut self, conn: Option<&mut super::Connection>) {
        self.close();
        if let Some(conn) = conn {
            conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending message counts its body and the work delivering it toward
    /// `max-inflight-bytes`; work without a body (an acknowledgement)
    /// counts nothing, so the memory budget never holds it back.
    #[tokio::test]
    async fn a_pending_message_counts_its_body_and_its_work() {
        let tasks = TaskTracker::new();
        let mut p: Pipeline<u32> = Pipeline::new(100, 1 << 20, Duration::ZERO, &tasks);
        let held = [0u8; 512];
        let work: Work = Box::pin(async move {
            std::future::pending::<()>().await;
            std::hint::black_box(held);
            Ok(())
        });
        let size = std::mem::size_of_val(&*work);
        assert!(size >= 512, "{size}");
        p.push(100, Some(work), 1).unwrap();
        assert_eq!(p.pending_bytes(), 100 + size);
        p.push(0, Some(Box::pin(std::future::pending())), 2)
            .unwrap();
        assert_eq!(p.pending_bytes(), 100 + size);
        p.close();
    }

    /// A count of its own, so that other tests' pipelines running at the
    /// same time do not count.
    fn waiters() -> &'static Waiters {
        Box::leak(Box::new(Waiters(AtomicUsize::new(0))))
    }

    /// A job that another thread (the store's) completes after `after`,
    /// calling `meanwhile` first.
    fn done_by_another_thread(
        after: Duration,
        meanwhile: impl FnOnce() + Send + 'static,
    ) -> (Work, std::thread::JoinHandle<()>) {
        let (done, rx) = tokio::sync::oneshot::channel::<()>();
        let store = std::thread::spawn(move || {
            std::thread::sleep(after);
            meanwhile();
            done.send(()).unwrap();
        });
        let work: Work = Box::pin(async move {
            rx.await.unwrap();
            Ok(())
        });
        (work, store)
    }

    /// A job done by another thread while the pipeline polls is seen at
    /// once, without the task sleeping; a job slower than the budget turns
    /// polling off until a job is done within it again.
    #[tokio::test]
    async fn a_lone_job_is_polled_only_while_jobs_are_done_within_the_budget() {
        let budget = Duration::from_secs(5);
        let waiters = waiters();
        let mut lone = LoneJob::new(budget, waiters);
        let (work, store) = done_by_another_thread(Duration::from_millis(5), || {});
        let started = Instant::now();
        lone.run(work).await.unwrap();
        store.join().unwrap();
        assert!(started.elapsed() < budget);
        assert!(lone.pays);
        assert_eq!(lone.caught, 1, "the job was seen done while polled");
        assert_eq!(waiters.0.load(Ordering::Relaxed), 0, "counted out");

        let mut lone = LoneJob::new(Duration::from_millis(2), waiters);
        let slow: Work = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        });
        lone.run(slow).await.unwrap();
        assert!(
            !lone.pays,
            "a job slower than the budget: the next sleeps at once"
        );
        lone.run(Box::pin(async { Ok(()) })).await.unwrap();
        assert!(lone.pays, "done within the budget again");
        assert!(!LoneJob::new(Duration::ZERO, waiters).pays, "0: never");
    }

    /// While another job is waited for (another connection's), a lone job
    /// is not polled, and one being polled stops when another job comes:
    /// a thread spent polling would be taken from them.
    #[tokio::test]
    async fn a_lone_job_is_not_polled_while_another_job_is_waited_for() {
        let budget = Duration::from_secs(5);
        let waiters = waiters();
        let mut lone = LoneJob::new(budget, waiters);

        let other = waiters.enter();
        let (work, store) = done_by_another_thread(Duration::from_millis(5), || {});
        lone.run(work).await.unwrap();
        store.join().unwrap();
        assert_eq!(lone.caught, 0, "slept: another job was waited for");
        drop(other);

        // Polled alone at first; then another job comes while it waits.
        let (work, store) = done_by_another_thread(Duration::from_millis(5), move || {
            // Still waited for when this job is done (counted out below).
            std::mem::forget(waiters.enter());
        });
        let started = Instant::now();
        lone.run(work).await.unwrap();
        store.join().unwrap();
        assert!(started.elapsed() < budget);
        assert_eq!(lone.caught, 0, "stopped polling when another job came");
        assert!(lone.pays, "done within the budget");

        waiters.0.store(0, Ordering::Relaxed);
        let (work, store) = done_by_another_thread(Duration::from_millis(5), || {});
        lone.run(work).await.unwrap();
        store.join().unwrap();
        assert_eq!(lone.caught, 1, "alone again: polled");
    }
}
