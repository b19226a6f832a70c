//! The stable mutation fuzzer for the url target (see README.md and
//! `halyard_stomp_fuzz::url` for what it checks).

use std::process::ExitCode;

use halyard_stomp_fuzz::driver::{self, Target};
use halyard_stomp_fuzz::url::{URL_TOKENS, check_url, url_seeds};

fn main() -> ExitCode {
    driver::main(Target {
        name: "url",
        seeds: url_seeds(),
        tokens: URL_TOKENS,
        max_len: 1024,
        check: check_url,
    })
}
