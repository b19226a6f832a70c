//! AFL++ target for the selector parser: every input is selector text
//! (lossily decoded as UTF-8). Build with `cargo afl build --release
//! --features afl --bin selector_afl`; see README.md.

use halyard_stomp_fuzz::driver;
use halyard_stomp_fuzz::selector::check_selector_bytes;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(finding) = driver::run(check_selector_bytes, data) {
            panic!("{finding}");
        }
    });
}
