//! Processes a test started: signals through `rustix` (no `kill` command),
//! waiting for an exit with a deadline, and a look at `/proc`.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process};

/// Sends `signal` to process `pid`.
///
/// # Errors
///
/// If there is no such process (any more) or it may not be signalled.
pub fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("no such process id: {pid}")))?;
    kill_process(pid, signal)?;
    Ok(())
}

/// Sends `sig` to `child`, ignoring a child that is already gone.
pub fn signal_child(child: &Child, sig: Signal) {
    let _ = signal(child.id(), sig);
}

/// SIGTERM, as a service manager stops a service.
///
/// # Panics
///
/// If the process cannot be signalled.
pub fn terminate(pid: u32) {
    signal(pid, Signal::TERM).unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
}

/// SIGSTOP: the process freezes (a stalled machine, a long GC pause) and
/// stays frozen until [`resume`].
///
/// # Panics
///
/// If the process cannot be signalled.
pub fn freeze(pid: u32) {
    signal(pid, Signal::STOP).unwrap_or_else(|e| panic!("kill -STOP {pid}: {e}"));
}

/// SIGCONT: a process frozen by [`freeze`] runs on.
///
/// # Panics
///
/// If the process cannot be signalled.
pub fn resume(pid: u32) {
    signal(pid, Signal::CONT).unwrap_or_else(|e| panic!("kill -CONT {pid}: {e}"));
}

/// `kill -9` and reap: nothing of the process runs after this returns.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (polling) up to `limit` for `child` to exit; its status, or `None`
/// if it is still running. A child that cannot be waited for counts as
/// still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...), if it exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain anything, even ")".
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The pids of the processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}
