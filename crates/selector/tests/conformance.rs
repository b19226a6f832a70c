//! The conformance table: `tests/conformance.txt`, one case per line:
//!
//! ```text
//! selector | properties | expected
//! ```
//!
//! *properties* are `name=type:value` separated by blanks, with types `i`
//! (long), `d` (double), `s` (string, in single quotes, `''` for a quote) and
//! `b` (boolean); `-` for none. *expected* is `true`, `false`, `unknown`,
//! `error` or `error@N` (a parse error at char position N). The line
//! `@convert on` / `@convert off` switches `convert_string_expressions` for
//! the lines after it. `#` starts a comment line.

use std::collections::HashMap;

use halyard_selector::{Options, Selector, Value};

type Props = HashMap<String, Value<'static>>;

fn parse_props(text: &str) -> Result<Props, String> {
    let mut props = Props::new();
    let mut rest = text.trim();
    if rest == "-" {
        return Ok(props);
    }
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or("missing '='")?;
        let (kind, after) = after.split_once(':').ok_or("missing ':'")?;
        let (value, after) = if kind == "s" {
            let body = after.strip_prefix('\'').ok_or("string must be quoted")?;
            let mut out = String::new();
            let mut chars = body.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|&(_, c)| c) == Some('\'') {
                        chars.next();
                        out.push('\'');
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    out.push(c);
                }
            }
            let end = end.ok_or("unterminated string")?;
            (Value::Str(out.into()), &body[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let value = match kind {
                "i" => Value::Long(raw.parse().map_err(|e| format!("{raw}: {e}"))?),
                "d" => Value::Double(raw.parse().map_err(|e| format!("{raw}: {e}"))?),
                "b" => Value::Bool(raw.parse().map_err(|e| format!("{raw}: {e}"))?),
                other => return Err(format!("unknown type {other:?}")),
            };
            (value, &after[end..])
        };
        props.insert(name.trim().to_owned(), value);
        rest = after.trim_start();
    }
    Ok(props)
}

#[test]
fn conformance_table() {
    let table = include_str!("conformance.txt");
    let mut options = Options::default();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, line) in table.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line {
            "@convert on" => {
                options.convert_string_expressions = true;
                continue;
            }
            "@convert off" => {
                options.convert_string_expressions = false;
                continue;
            }
            _ => {}
        }
        let mut cols = line.rsplitn(3, '|');
        let (Some(expected), Some(props), Some(selector)) = (cols.next(), cols.next(), cols.next())
        else {
            panic!("line {line_no}: expected 'selector | properties | expected'");
        };
        let (selector, expected) = (selector.trim(), expected.trim());
        let props = parse_props(props).unwrap_or_else(|e| panic!("line {line_no}: {e}"));
        cases += 1;
        let got = match Selector::parse_with(selector, &options) {
            Err(e) => {
                let ok = match expected.strip_prefix("error@") {
                    Some(pos) => pos.parse() == Ok(e.position),
                    None => expected == "error",
                };
                if ok {
                    continue;
                }
                format!("error@{} ({})", e.position, e.message)
            }
            Ok(sel) => match sel.eval(&props) {
                Some(true) => "true".to_owned(),
                Some(false) => "false".to_owned(),
                None => "unknown".to_owned(),
            },
        };
        if got != expected {
            failures.push(format!(
                "line {line_no}: {selector}  =>  {got}, expected {expected}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases >= 500, "only {cases} cases");
}
