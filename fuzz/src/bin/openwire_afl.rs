//! AFL++ target for the OpenWire check (a 2-byte format header, then the
//! bytes on the wire). Build with
//! `cargo afl build --release --features afl --bin openwire_afl`; see README.md.

use halyard_stomp_fuzz::driver;
use halyard_stomp_fuzz::openwire::check_openwire;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(finding) = driver::run(check_openwire, data) {
            panic!("{finding}");
        }
    });
}
