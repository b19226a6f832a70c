//! Giving freed heap memory back to the operating system after a burst
//! (`limits.memory-trim-ms`, `limits.memory-trim-after-bytes`).
//!
//! glibc's allocator keeps memory a burst freed mapped for reuse: after a
//! deep queue was drained the broker's resident memory stayed at the
//! drain's peak for the rest of its life, and every later load was
//! measured on top of it (issue #19: scenarios f and s inherited e's
//! 150 MiB). `malloc_trim` returns the free pages. It is called only once
//! the messages held (the memory budget's use, the bulk of what a burst
//! allocates) have fallen well below their last high and stopped falling,
//! not on a timer alone:
//! memory given back costs a page fault each when it is used again, which
//! under steady load would be paid over and over for nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::core::BrokerCore;

/// Checks after a trim before the follow-up one.
const FOLLOW_UP_TICKS: u32 = 8;

/// Starts the check on the core's task tracker; it ends with the core.
pub(crate) fn start(core: &Arc<BrokerCore>) {
    let limits = &core.config.limits;
    if limits.memory_trim_ms == 0 || !supported() {
        return;
    }
    let every = Duration::from_millis(limits.memory_trim_ms);
    let after = limits.memory_trim_after_bytes;
    let memory = core.memory.clone();
    let stop = core.stop.clone();
    core.tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut high = memory.used();
        let mut prev = high;
        let mut follow_up: Option<u32> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = memory.used();
            high = high.max(now);
            let fell = high - now >= after;
            // Once the fall has stopped: while a queue is still draining,
            // what it frees next would stay behind (a drained 100k queue
            // trimmed halfway kept 76 MiB resident, at its end 43 MiB).
            let settled = now + after / 8 >= prev;
            prev = now;
            // Once more a few seconds after: what goes after the messages
            // (the index's and the journal's share, the consumers' buffers)
            // was still held at the first (62 vs 43 MiB after a 100k drain).
            let again = match follow_up {
                Some(0) => {
                    follow_up = None;
                    now < after
                }
                Some(n) => {
                    follow_up = Some(n - 1);
                    false
                }
                None => false,
            };
            if !(again || fell && settled) {
                continue;
            }
            if !again {
                follow_up = Some(FOLLOW_UP_TICKS);
            }
            high = now;
            // It walks every arena (milliseconds with a large heap): not
            // on a runtime worker.
            if tokio::task::spawn_blocking(trim).await.is_ok() {
                memory.trims.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn supported() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn supported() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases free memory
    // the allocator owns; glibc locks each arena while it works, so it is
    // safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
