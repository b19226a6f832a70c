//! The stable mutation fuzzer for the journal target (see README.md and
//! `halyard_stomp_fuzz::journal` for what it checks).

use std::process::ExitCode;

use halyard_stomp_fuzz::driver::{self, Target};
use halyard_stomp_fuzz::journal::{JOURNAL_TOKENS, check_journal, journal_seeds};

fn main() -> ExitCode {
    driver::main(Target {
        name: "journal",
        seeds: journal_seeds(),
        tokens: JOURNAL_TOKENS,
        max_len: 4096,
        check: check_journal,
    })
}
