//! AFL++ target for the url check (raw bytes in). Build with
//! `cargo afl build --release --features afl --bin url_afl`; see README.md.

use halyard_stomp_fuzz::driver;
use halyard_stomp_fuzz::url::check_url;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(finding) = driver::run(check_url, data) {
            panic!("{finding}");
        }
    });
}
