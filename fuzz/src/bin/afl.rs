//! AFL++ target: every input is a serialised [`Case`] (version, limits,
//! chunk sizes, then the bytes on the wire). Build with `cargo afl build
//! --release --features afl --bin afl`; see README.md.

use halyard_stomp_fuzz::{Case, check_case, driver};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(finding) = driver::run(
            |d| {
                check_case(&Case::from_bytes(d))
                    .map(|_| 0)
                    .map_err(|f| f.to_string())
            },
            data,
        ) {
            panic!("{finding}");
        }
    });
}
