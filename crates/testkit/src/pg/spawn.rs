//! Server processes that die with the test process, and a guard that
//! removes their directory afterwards.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;

use rustix::process::Signal;

/// Spawns `command` from a thread that lives as long as the process, with
/// SIGQUIT (PostgreSQL's immediate shutdown) as its parent-death signal, so
/// that the server dies with the test process however that ends.
///
/// The kernel sends the parent-death signal when the *thread* that forked
/// the child exits, not the process: spawning from a test's own thread (or
/// a tokio blocking-pool thread) would kill the server when that thread
/// ends. Hence the dedicated thread.
pub(super) fn spawn_tied_to_process(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("halyard-testkit-spawner".to_owned())
            .spawn(move || {
                // Ends only if SPAWNER is dropped, which it never is.
                for (mut command, reply) in incoming {
                    let _ = reply.send(spawn_with_parent_death_signal(&mut command));
                }
            })
            .unwrap_or_else(|e| panic!("halyard-testkit: cannot spawn a thread: {e}"));
        requests
    });
    let gone = || io::Error::other("the halyard-testkit spawner thread is gone");
    let (reply, response) = mpsc::channel();
    spawner.send((command, reply)).map_err(|_| gone())?;
    response.recv().map_err(|_| gone())?
}

#[allow(unsafe_code)]
fn spawn_with_parent_death_signal(command: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe operations are allowed (another thread of the parent
    // may have held a lock, e.g. the allocator's, at the fork). It makes one
    // raw prctl(PR_SET_PDEATHSIG) system call: no allocation, no lock, no
    // access to shared state; on failure it returns the error code, which
    // std reports to the parent without allocating either. std runs it after
    // its own setup, including setuid/setgid (a credential change would
    // clear the parent-death signal), and `postgres` is not set-user-ID
    // (whose exec would clear it too).
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::QUIT))?;
            Ok(())
        });
    }
    command.spawn()
}

/// Spawns a process that removes `dir` once this process has exited, however
/// (a static server is never dropped; a test may abort): it waits for
/// end-of-file on its stdin, which only this process holds open, then for
/// the postmaster to exit (it has been sent its parent-death signal), then
/// removes `dir`. In its own process group, so that a signal to the test's
/// group spares it.
pub(super) fn spawn_guard(dir: &Path) -> io::Result<Child> {
    const SCRIPT: &str = r#"
read -r _
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
i=0
while [ -n "$pid" ] && [ "$i" -lt 300 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
rm -rf "$1"
"#;
    Command::new("/bin/sh")
        .args(["-c", SCRIPT, "halyard-testkit-guard"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}
