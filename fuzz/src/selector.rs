//! The selector check shared by the selector fuzzers (`src/bin/selector.rs`,
//! `src/bin/selector_afl.rs`): parse arbitrary text as a JMS selector and,
//! when it parses, evaluate it against a fixed message under both settings
//! of `convert_string_expressions`. See README.md.

use std::borrow::Cow;
use std::collections::HashMap;

use halyard_selector::{Fields, Options, Selector, Value};

/// The fixed message every parsed selector is evaluated against: each type,
/// odd values, header names, and (by omission) a missing `e`.
pub struct Message(HashMap<&'static str, Value<'static>>);

impl Message {
    /// The message.
    pub fn new() -> Message {
        let mut m = HashMap::new();
        m.insert("a", Value::Long(5));
        m.insert("b", Value::Double(2.5));
        m.insert("c", Value::Str(Cow::Borrowed("abc")));
        m.insert("d", Value::Bool(true));
        m.insert("big", Value::Long(i64::MAX));
        m.insert("small", Value::Long(i64::MIN));
        m.insert("nan", Value::Double(f64::NAN));
        m.insert("num", Value::Str(Cow::Borrowed("10")));
        m.insert("uni", Value::Str(Cow::Borrowed("h\u{e9}llo \u{1f980}")));
        m.insert("JMSPriority", Value::Long(4));
        m.insert("JMSType", Value::Str(Cow::Borrowed("order")));
        Message(m)
    }
}

impl Default for Message {
    fn default() -> Self {
        Message::new()
    }
}

impl Fields for Message {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        self.0.get(name).cloned()
    }
}

/// What one input did, for the fuzzer's novelty feedback.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SelectorOutcome {
    /// Refused: the first words of the message.
    Refused(String),
    /// Parsed; the result with conversion off and on.
    Parsed(Option<bool>, Option<bool>),
}

/// Runs one input. `Err` is a broken invariant (a panic is caught by the
/// caller).
pub fn check_selector(text: &str, message: &Message) -> Result<SelectorOutcome, String> {
    let plain = Options::default();
    let convert = Options {
        convert_string_expressions: true,
        ..Options::default()
    };
    let parsed = Selector::parse_with(text, &plain);
    let converted = Selector::parse_with(text, &convert);
    match (parsed, converted) {
        (Err(a), Err(b)) => {
            if a != b {
                return Err(format!("errors differ by option: {a} / {b}"));
            }
            if a.position > text.chars().count() {
                return Err(format!("error position past the end: {a}"));
            }
            if a.message.is_empty() {
                return Err("empty error message".to_owned());
            }
            let head: String = a
                .message
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            Ok(SelectorOutcome::Refused(head))
        }
        (Ok(a), Ok(b)) => {
            if a.text() != text || a.to_string() != text {
                return Err("text() is not the text given".to_owned());
            }
            let (ra, rb) = (a.eval(message), b.eval(message));
            if a.matches(message) != (ra == Some(true)) {
                return Err("matches disagrees with eval".to_owned());
            }
            // Evaluating twice gives the same answer (no hidden state).
            if a.eval(message) != ra || b.eval(message) != rb {
                return Err("eval is not repeatable".to_owned());
            }
            Ok(SelectorOutcome::Parsed(ra, rb))
        }
        (a, b) => Err(format!(
            "parses with one option only: {:?} / {:?}",
            a.err(),
            b.err()
        )),
    }
}

/// Seeds: valid selectors of every construct and one broken input per
/// error path.
pub const SELECTOR_SEEDS: &[&str] = &[
    "a = 5",
    "color = 'red' AND weight > 2.5",
    "a BETWEEN 1 AND 10 OR b NOT BETWEEN -1.5 AND 2e3",
    "c IN ('abc', 'x''y', '') AND c NOT IN ('z')",
    "c LIKE 'a%' OR c NOT LIKE '!_%' ESCAPE '!'",
    "e IS NULL AND a IS NOT NULL",
    "NOT (d AND (a + 2 * 3 - 4 / 2 % 3 >= 7)) OR FALSE",
    "-a = -5 AND +b = 2.5 AND - -a = 5",
    "a = 0x1F OR a = 017 OR a = 5L OR b = .5e1 OR b = 2.5f",
    "a = -9223372036854775808 OR big + 1 = small",
    "num > 9 AND num = 10 AND d = 'true'",
    "uni LIKE 'h_llo %' AND JMSPriority > 3 AND JMSType = 'order'",
    "$x_1 = 1 -- comment\n OR /* block */ y = 2",
    "nan = nan OR nan <> 1.0",
    "a = 1 AND",
    "a == 1",
    "c = 'unterminated",
    "a = 9223372036854775808",
    "XPATH '//a'",
    "\"quoted\" = 1",
    "((((a = 1)))",
    "a IN ()",
    "c LIKE 'x' ESCAPE 'ab'",
    "5",
];

thread_local! {
    static MESSAGE: Message = Message::new();
}

/// [`check_selector`] on raw bytes (lossily decoded as UTF-8) against the
/// fixed [`Message`], for the shared driver and the AFL target: `Ok` with
/// a signature of the outcome.
pub fn check_selector_bytes(data: &[u8]) -> Result<u64, String> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let text = String::from_utf8_lossy(data);
    let outcome = MESSAGE.with(|m| check_selector(&text, m))?;
    let mut h = DefaultHasher::new();
    match outcome {
        // The kind of refusal, not the text it quotes (which would make
        // nearly every input novel).
        SelectorOutcome::Refused(head) => head
            .split(['\'', '"'])
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .take(2)
            .filter(|w| w.chars().all(char::is_alphabetic))
            .collect::<Vec<_>>()
            .hash(&mut h),
        parsed => parsed.hash(&mut h),
    }
    Ok(h.finish())
}
