//! The stable mutation fuzzer for the config target (see README.md and
//! `halyard_stomp_fuzz::config` for what it checks).

use std::process::ExitCode;

use halyard_stomp_fuzz::config::{CONFIG_TOKENS, check_config, config_seeds};
use halyard_stomp_fuzz::driver::{self, Target};

fn main() -> ExitCode {
    driver::main(Target {
        name: "config",
        seeds: config_seeds(),
        tokens: CONFIG_TOKENS,
        max_len: 16384,
        check: check_config,
    })
}
