//! The floor for synchronous persistent sends on this machine: a server that
//! does nothing but what a broker cannot avoid for a receipted persistent
//! SEND — read the frame from the socket, append it to a file, `fdatasync`,
//! answer the RECEIPT — with the best group commit there is (the first
//! waiter writes and syncs everyone's frames on its own thread, so a lone
//! producer crosses no thread at all). No routing, no index, no consumers.
//!
//! `bench/compare.sh` runs `halyard bench` against it beside Halyard, so
//! that what Halyard reaches of the disk's raw sync rate can be told apart
//! from what any server reaches over a socket (issue #19's goals 1 and 2).
//!
//! Usage: `sync_floor ADDR FILE` (e.g. `127.0.0.1:0 /tmp/floor.log`);
//! prints the address it listens on, then serves until killed. It speaks
//! just enough STOMP for `halyard bench` with producers only.

#[path = "floor/stomp.rs"]
mod stomp;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Frames waiting to be made durable, and how far that has got.
#[derive(Default)]
struct Log {
    queued: Vec<Vec<u8>>,
    /// Tickets: the last one handed out, and the last one durable.
    issued: u64,
    durable: u64,
    /// A waiter is writing and syncing.
    busy: bool,
}

struct Shared {
    log: Mutex<Log>,
    changed: Condvar,
    file: Mutex<File>,
}

impl Shared {
    /// Appends `frame` and returns once it is durable: the first waiter to
    /// find nobody writing writes everything queued and syncs it.
    fn append(&self, frame: Vec<u8>) -> std::io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.queued.push(frame);
        log.issued += 1;
        let ticket = log.issued;
        loop {
            if log.durable >= ticket {
                return Ok(());
            }
            if log.busy {
                log = self
                    .changed
                    .wait(log)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            log.busy = true;
            let batch = std::mem::take(&mut log.queued);
            let upto = log.issued;
            drop(log);
            let result = {
                let mut f = self.file.lock().unwrap_or_else(PoisonError::into_inner);
                let bytes: Vec<u8> = batch.concat();
                f.write_all(&bytes).and_then(|()| f.sync_data())
            };
            log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.busy = false;
            if result.is_ok() {
                log.durable = upto;
            }
            self.changed.notify_all();
            result?;
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, path] = &args[..] else {
        eprintln!("usage: sync_floor ADDR FILE");
        std::process::exit(2);
    };
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let shared = Arc::new(Shared {
        log: Mutex::default(),
        changed: Condvar::new(),
        file: Mutex::new(file),
    });
    let listener = TcpListener::bind(addr)?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let stream = stream?;
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = stomp::serve(stream, |_, record| shared.append(record));
        });
    }
    Ok(())
}
