//! The stable mutation fuzzer for the OpenWire codec (see README.md and
//! `halyard_stomp_fuzz::openwire` for what it checks).

use std::process::ExitCode;

use halyard_stomp_fuzz::driver::{self, Target};
use halyard_stomp_fuzz::openwire::{OPENWIRE_TOKENS, check_openwire, openwire_seeds};

fn main() -> ExitCode {
    driver::main(Target {
        name: "openwire",
        seeds: openwire_seeds(),
        tokens: OPENWIRE_TOKENS,
        max_len: 8192,
        check: check_openwire,
    })
}
