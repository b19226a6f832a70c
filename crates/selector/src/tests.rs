//! Limits and error positions.

use super::*;

fn err(text: &str) -> ParseError {
    match Selector::parse(text) {
        Ok(s) => panic!("{text:?} parsed as {s:?}"),
        Err(e) => e,
    }
}

fn at(text: &str, position: usize, needle: &str) {
    let e = err(text);
    assert_eq!(e.position, position, "{text:?}: {e}");
    assert!(e.message.contains(needle), "{text:?}: {e}");
}

#[test]
fn max_len_is_checked_before_anything_else() {
    let long = format!("a = '{}'", "x".repeat(DEFAULT_MAX_LEN));
    at(&long, 0, "limit of 4096 bytes");
    let fits = format!("a = '{}'", "x".repeat(DEFAULT_MAX_LEN - 6));
    assert_eq!(fits.len(), DEFAULT_MAX_LEN);
    assert!(Selector::parse(&fits).is_ok());
    let small = Options {
        max_len: 5,
        ..Options::default()
    };
    assert!(Selector::parse_with("a = 1", &small).is_ok());
    assert_eq!(
        Selector::parse_with("a = 12", &small)
            .err()
            .map(|e| e.position),
        Some(0)
    );
    // Too long is refused even when it is all blanks.
    assert!(Selector::parse_optional("       ", &small).is_err());
    assert!(matches!(
        Selector::parse_optional("  \t\n ", &Options::default()),
        Ok(None)
    ));
    assert!(matches!(
        Selector::parse_optional("", &Options::default()),
        Ok(None)
    ));
}

#[test]
fn nesting_is_bounded_without_overflowing_the_stack() {
    let unlimited = Options {
        max_len: usize::MAX,
        ..Options::default()
    };
    let parens = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
    let e = Selector::parse_with(&parens, &unlimited).expect_err("too deep");
    assert!(e.message.contains("nested too deeply"), "{e}");
    assert_eq!(e.position, MAX_DEPTH);
    let nots = format!("{}a", "NOT ".repeat(100_000));
    let e = Selector::parse_with(&nots, &unlimited).expect_err("too deep");
    assert!(e.message.contains("nested too deeply"), "{e}");
    let minus = format!("{}a > 1", "-".repeat(100_000));
    assert!(Selector::parse_with(&minus, &unlimited).is_err());
    let sums = format!("a{} > 1", " + a".repeat(100_000));
    assert!(Selector::parse_with(&sums, &unlimited).is_err());

    // Just inside the limit is fine.
    let ok = format!(
        "{}a = 1{}",
        "(".repeat(MAX_DEPTH - 2),
        ")".repeat(MAX_DEPTH - 2)
    );
    assert!(Selector::parse(&ok).is_ok(), "{:?}", Selector::parse(&ok));
    // Long AND/OR chains are flat, not deep.
    let ors = (0..500)
        .map(|i| format!("id = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    assert!(Selector::parse_with(&ors, &unlimited).is_ok());
}

#[test]
fn in_list_is_bounded() {
    let items = |n: usize| {
        (0..n)
            .map(|i| format!("'{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let unlimited = Options {
        max_len: usize::MAX,
        ..Options::default()
    };
    assert!(Selector::parse_with(&format!("a IN ({})", items(MAX_IN_LIST)), &unlimited).is_ok());
    let e = Selector::parse_with(&format!("a IN ({})", items(MAX_IN_LIST + 1)), &unlimited)
        .expect_err("too many");
    assert!(e.message.contains("at most 1024"), "{e}");
}

#[test]
fn error_positions_and_messages() {
    at(
        "a = 1 AND",
        9,
        "expected an expression after 'AND', but the selector ends",
    );
    at("a = 1 AND OR b", 10, "after 'AND', found 'OR'");
    at("name = 'abc", 7, "unterminated string literal");
    at("a == 1", 2, "unknown operator '=='");
    at("a != 1", 2, "'<>'");
    at("é = 1 AND \"b\" = 2", 10, "double-quoted");
    at("a = 1 b", 6, "unexpected 'b'");
    at("(a = 1", 6, "expected ')' to close the '(' at position 0");
    at("a = 1)", 5, "unbalanced ')'");
    at("5", 0, "numeric");
    at("'x'", 0, "string");
    at("a = 1 AND 2", 10, "numeric");
    at("a IS 5", 5, "NULL or NOT NULL");
    at("a LIKE 5", 7, "LIKE pattern");
    at("a LIKE 'x' ESCAPE 'ab'", 18, "exactly one character");
    at("a LIKE 'x' ESCAPE ''", 18, "exactly one character");
    at("a IN (1)", 6, "strings only");
    at("a IN ('x' 'y')", 10, "',' or ')'");
    at("a BETWEEN 1 OR 2", 12, "AND");
    at("a NOT 5", 6, "BETWEEN, IN or LIKE");
    at("a = 9223372036854775808", 4, "too large");
    at("a = 99999999999999999999", 4, "too large");
    at("a = 0xFFFFFFFFFFFFFFFFF", 4, "too large");
    at("a = 09", 4, "octal");
    at("a = 5abc", 4, "malformed number");
    at("a = 1.5.5", 4, "malformed number");
    at("XPATH '//a'", 0, "XPath");
    at("xquery 'x'", 0, "XPath");
    at("a = NULL", 4, "IS NULL");
    at("a = 1 /* open", 6, "unterminated comment");
    at("", 0, "empty");
    at("a = #", 4, "unexpected character");
    assert!(Selector::parse("a = -9223372036854775808").is_ok());
}

#[test]
fn text_and_display_are_as_given() {
    let s = Selector::parse("  a = 1 -- a comment\n").expect("parses");
    assert_eq!(s.text(), "  a = 1 -- a comment\n");
    assert_eq!(s.to_string(), s.text());
}

#[test]
fn selector_is_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<Selector>();
}
