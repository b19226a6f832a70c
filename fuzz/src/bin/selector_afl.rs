//! AFL++ target for the selector parser: every input is selector text
//! (lossily decoded as UTF-8). Build with `cargo afl build --release
//! --features afl --bin selector_afl`; see README.md.

use halyard_stomp_fuzz::selector::{Message, check_selector};

fn main() {
    let message = Message::new();
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        if let Err(finding) = check_selector(&text, &message) {
            panic!("{finding}");
        }
    });
}
