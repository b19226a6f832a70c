//! AFL++ target for the journal check (raw bytes in). Build with
//! `cargo afl build --release --features afl --bin journal_afl`; see README.md.

use halyard_stomp_fuzz::driver;
use halyard_stomp_fuzz::journal::check_journal;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(finding) = driver::run(check_journal, data) {
            panic!("{finding}");
        }
    });
}
