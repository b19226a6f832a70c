//! The connection's ordered effects pipeline.
//!
//! Each job is a future that completes a frame's effect (wait for the store,
//! hand the message to its destination, ...) and yields the receipt to send.
//! A task of its own runs the jobs one after another, so
//! - receipts go out in frame order, and a producer's messages reach each
//!   destination in the order it sent them;
//! - a destination applying flow control delays this connection's later
//!   receipts but never its deliveries, acknowledgements or heart-beats,
//!   which the session keeps handling meanwhile (a connection that both
//!   produces to and consumes from a full queue can still drain it).
//!
//! The session stops reading frames while `limits.max-inflight-frames` jobs
//! or `limits.max-inflight-bytes` body bytes are pending: that is where
//! backpressure reaches the producer. Both channels are sized so the job
//! count can never exceed their capacity, so neither side ever waits on the
//! other.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

use super::error::Fatal;

/// A frame's pending effect; yields the receipt id to send, if any.
pub(super) type Work = Pin<Box<dyn Future<Output = Result<Option<String>, Fatal>> + Send>>;

struct Job {
    work: Work,
    bytes: usize,
    then_close: bool,
}

/// A finished job.
pub(super) struct Done {
    pub(super) result: Result<Option<String>, Fatal>,
    bytes: usize,
    /// Close the connection once the receipt is written (DISCONNECT).
    pub(super) then_close: bool,
}

pub(super) struct Effects {
    jobs: Option<mpsc::Sender<Job>>,
    pub(super) done: mpsc::Receiver<Done>,
    frames: usize,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Effects {
    pub(super) fn new(max_frames: usize, max_bytes: usize) -> Effects {
        let (jobs, mut job_rx) = mpsc::channel::<Job>(max_frames + 1);
        let (done_tx, done) = mpsc::channel(max_frames + 1);
        tokio::spawn(async move {
            while let Some(job) = job_rx.recv().await {
                let result = job.work.await;
                // If the session has gone, keep going anyway: the client's
                // messages still reach their destinations.
                let _ = done_tx.try_send(Done {
                    result,
                    bytes: job.bytes,
                    then_close: job.then_close,
                });
            }
        });
        Effects {
            jobs: Some(jobs),
            done,
            frames: 0,
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    /// Whether the session may read another frame.
    pub(super) fn has_room(&self) -> bool {
        self.frames < self.max_frames && self.bytes < self.max_bytes
    }

    /// Body bytes of frames whose effect is pending.
    pub(super) fn pending_bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_idle(&self) -> bool {
        self.frames == 0
    }

    /// Queues a job. `bytes` counts toward the in-flight byte limit.
    pub(super) fn push(&mut self, bytes: usize, work: Work) {
        self.push_job(Job {
            work,
            bytes,
            then_close: false,
        });
    }

    /// Queues a receipt that is due once every earlier job is done.
    pub(super) fn receipt(&mut self, receipt: Option<String>) {
        if receipt.is_some() {
            self.push(0, Box::pin(std::future::ready(Ok(receipt))));
        }
    }

    /// Queues the receipt of a DISCONNECT, after which the session closes.
    pub(super) fn disconnect(&mut self, receipt: String) {
        self.push_job(Job {
            work: Box::pin(std::future::ready(Ok(Some(receipt)))),
            bytes: 0,
            then_close: true,
        });
    }

    fn push_job(&mut self, job: Job) {
        self.frames += 1;
        self.bytes += job.bytes;
        let Some(jobs) = &self.jobs else { return };
        if jobs.try_send(job).is_err() {
            // Cannot happen: the session reads no frame while `frames` is at
            // `max_frames`, and each frame queues at most one job.
            tracing::error!("effects pipeline overflow");
        }
    }

    /// Accounts for a finished job.
    pub(super) fn finished(&mut self, done: &Done) {
        self.frames -= 1;
        self.bytes -= done.bytes;
    }

    /// Lets the pipeline finish what it has and end.
    pub(super) fn close(&mut self) {
        self.jobs = None;
    }
}
