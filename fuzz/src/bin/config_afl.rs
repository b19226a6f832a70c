//! AFL++ target for the config check (raw bytes in). Build with
//! `cargo afl build --release --features afl --bin config_afl`; see README.md.

use halyard_stomp_fuzz::config::check_config;
use halyard_stomp_fuzz::driver;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(finding) = driver::run(check_config, data) {
            panic!("{finding}");
        }
    });
}
