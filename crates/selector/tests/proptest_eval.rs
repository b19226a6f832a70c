//! Random selectors against a second, deliberately plain evaluator.
//!
//! The generator builds syntax trees (typed ones, and ones mixing types on
//! purpose), renders them fully parenthesised, parses the text with the
//! crate and compares its `eval` with [`reference`] below, which is written
//! straight from the rules (a table-DP for LIKE, not the crate's two-pointer
//! matcher). Also: arbitrary text never panics the parser, and whatever
//! parses evaluates without panicking.

use std::collections::HashMap;

use halyard_selector::{Options, Selector, Value};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
enum V {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone)]
enum T {
    Lit(V),
    Id(&'static str),
    Neg(Box<T>),
    Arith(char, Box<T>, Box<T>),
    Cmp(&'static str, Box<T>, Box<T>),
    Between(bool, Box<T>, Box<T>, Box<T>),
    In(bool, Box<T>, Vec<String>),
    Like(bool, Box<T>, String, bool),
    IsNull(bool, Box<T>),
    Not(Box<T>),
    And(Box<T>, Box<T>),
    Or(Box<T>, Box<T>),
}

// ---- rendering --------------------------------------------------------

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn render(t: &T) -> String {
    match t {
        T::Lit(V::Bool(b)) => if *b { "TRUE" } else { "false" }.to_owned(),
        T::Lit(V::Long(n)) if *n < 0 => format!("(-{})", n.unsigned_abs()),
        T::Lit(V::Long(n)) => n.to_string(),
        T::Lit(V::Double(d)) if *d < 0.0 => format!("(-{:?})", -d),
        T::Lit(V::Double(d)) => format!("{d:?}"),
        T::Lit(V::Str(s)) => quote(s),
        T::Id(name) => (*name).to_owned(),
        T::Neg(e) => format!("(-{})", render(e)),
        T::Arith(op, l, r) => format!("({} {op} {})", render(l), render(r)),
        T::Cmp(op, l, r) => format!("({} {op} {})", render(l), render(r)),
        T::Between(not, v, lo, hi) => format!(
            "({} {}BETWEEN {} AND {})",
            render(v),
            if *not { "NOT " } else { "" },
            render(lo),
            render(hi)
        ),
        T::In(not, v, list) => format!(
            "({} {}IN ({}))",
            render(v),
            if *not { "NOT " } else { "" },
            list.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
        ),
        T::Like(not, v, pat, escape) => format!(
            "({} {}LIKE {}{})",
            render(v),
            if *not { "NOT " } else { "" },
            quote(pat),
            if *escape { " ESCAPE '!'" } else { "" }
        ),
        T::IsNull(not, v) => format!("({} IS {}NULL)", render(v), if *not { "NOT " } else { "" }),
        T::Not(e) => format!("(NOT {})", render(e)),
        T::And(l, r) => format!("({} AND {})", render(l), render(r)),
        T::Or(l, r) => format!("({} OR {})", render(l), render(r)),
    }
}

// ---- the reference evaluator -------------------------------------------

#[derive(PartialEq)]
enum Kind {
    Bool,
    Num,
    Str,
    Any,
}

fn kind(t: &T) -> Kind {
    match t {
        T::Lit(V::Long(_) | V::Double(_)) | T::Neg(_) | T::Arith(..) => Kind::Num,
        T::Lit(V::Str(_)) => Kind::Str,
        T::Id(_) => Kind::Any,
        _ => Kind::Bool,
    }
}

/// Whether the parser must refuse the tree: a number or string where a
/// condition belongs (the whole selector, AND, OR, NOT).
fn statically_wrong(t: &T, top: bool) -> bool {
    let here = top && matches!(kind(t), Kind::Num | Kind::Str);
    here || match t {
        T::Not(e) => statically_wrong(e, true),
        T::And(l, r) | T::Or(l, r) => statically_wrong(l, true) || statically_wrong(r, true),
        T::Neg(e) | T::IsNull(_, e) | T::In(_, e, _) | T::Like(_, e, _, _) => {
            statically_wrong(e, false)
        }
        T::Arith(_, l, r) | T::Cmp(_, l, r) => {
            statically_wrong(l, false) || statically_wrong(r, false)
        }
        T::Between(_, v, lo, hi) => {
            statically_wrong(v, false) || statically_wrong(lo, false) || statically_wrong(hi, false)
        }
        T::Lit(_) | T::Id(_) => false,
    }
}

fn value(t: &T, p: &HashMap<&str, V>, conv: bool) -> Option<V> {
    match t {
        T::Lit(v) => Some(v.clone()),
        T::Id(name) => p.get(name).cloned(),
        T::Neg(e) => match value(e, p, conv)? {
            V::Long(n) => Some(V::Long(n.wrapping_neg())),
            V::Double(d) => Some(V::Double(-d)),
            _ => None,
        },
        T::Arith(op, l, r) => {
            let (l, r) = (value(l, p, conv)?, value(r, p, conv)?);
            match (l, r) {
                (V::Long(a), V::Long(b)) => Some(V::Long(match op {
                    '+' => a.wrapping_add(b),
                    '-' => a.wrapping_sub(b),
                    '*' => a.wrapping_mul(b),
                    '/' if b == 0 => return None,
                    '/' => a.wrapping_div(b),
                    _ if b == 0 => return None,
                    _ => a.wrapping_rem(b),
                })),
                (l, r) => {
                    let f = |v: V| match v {
                        V::Long(n) => Some(n as f64),
                        V::Double(d) => Some(d),
                        _ => None,
                    };
                    let (a, b) = (f(l)?, f(r)?);
                    Some(V::Double(match op {
                        '+' => a + b,
                        '-' => a - b,
                        '*' => a * b,
                        '/' => a / b,
                        _ => a % b,
                    }))
                }
            }
        }
        other => truth(other, p, conv).map(V::Bool),
    }
}

fn ord_holds(op: &str, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        "=" => o == Equal,
        "<>" => o != Equal,
        "<" => o == Less,
        "<=" => o != Greater,
        ">" => o == Greater,
        _ => o != Less,
    }
}

fn compare(op: &str, l: &V, r: &V, conv: bool) -> Option<bool> {
    let eq_only = |eq: bool| match op {
        "=" => Some(eq),
        "<>" => Some(!eq),
        _ => None,
    };
    let num = |v: &V| match v {
        V::Long(n) => Some(*n as f64),
        V::Double(d) => Some(*d),
        _ => None,
    };
    match (l, r) {
        (V::Long(a), V::Long(b)) => Some(ord_holds(op, a.cmp(b))),
        (V::Long(_) | V::Double(_), V::Long(_) | V::Double(_)) => {
            num(l)?.partial_cmp(&num(r)?).map(|o| ord_holds(op, o))
        }
        (V::Str(a), V::Str(b)) => eq_only(a == b),
        (V::Bool(a), V::Bool(b)) => eq_only(a == b),
        (V::Str(s), other) if conv => {
            let converted = match other {
                V::Long(_) => V::Long(s.parse().ok()?),
                V::Double(_) => V::Double(s.trim().parse().ok()?),
                V::Bool(_) => V::Bool(s.eq_ignore_ascii_case("true")),
                V::Str(_) => return None,
            };
            compare(op, &converted, other, false)
        }
        (other, V::Str(_)) if conv => {
            // Swap the sides, and the operator with them.
            let flipped = match op {
                "<" => ">",
                "<=" => ">=",
                ">" => "<",
                ">=" => "<=",
                same => same,
            };
            compare(flipped, r, other, true)
        }
        _ => None,
    }
}

/// LIKE by dynamic programming over chars (ActiveMQ's escape rule: the
/// escape char makes `%`, `_` or itself literal and is literal elsewhere).
fn like(pat: &str, escape: Option<char>, s: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        C(char),
        One,
        Many,
    }
    let pc: Vec<char> = pat.chars().collect();
    let mut ps = Vec::new();
    let mut i = 0;
    while i < pc.len() {
        let c = pc[i];
        if Some(c) == escape
            && i + 1 < pc.len()
            && matches!(pc[i + 1], '%' | '_') | (Some(pc[i + 1]) == escape)
        {
            ps.push(P::C(pc[i + 1]));
            i += 2;
            continue;
        }
        ps.push(match c {
            '%' => P::Many,
            '_' => P::One,
            c => P::C(c),
        });
        i += 1;
    }
    let sc: Vec<char> = s.chars().collect();
    // dp[j] = ps[..i] matches sc[..j]
    let mut dp = vec![false; sc.len() + 1];
    dp[0] = true;
    for p in ps {
        let mut next = vec![false; sc.len() + 1];
        for j in 0..=sc.len() {
            next[j] = match p {
                P::Many => dp[j] || (j > 0 && next[j - 1]),
                P::One => j > 0 && dp[j - 1],
                P::C(c) => j > 0 && dp[j - 1] && sc[j - 1] == c,
            };
        }
        dp = next;
    }
    dp[sc.len()]
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn not3(a: Option<bool>) -> Option<bool> {
    a.map(|b| !b)
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    not3(and3(not3(a), not3(b)))
}

fn truth(t: &T, p: &HashMap<&str, V>, conv: bool) -> Option<bool> {
    match t {
        T::Cmp(op, l, r) => compare(op, &value(l, p, conv)?, &value(r, p, conv)?, conv),
        T::Between(not, v, lo, hi) => {
            let v = value(v, p, conv)?;
            let ge = value(lo, p, conv).and_then(|lo| compare(">=", &v, &lo, conv));
            let le = value(hi, p, conv).and_then(|hi| compare("<=", &v, &hi, conv));
            let inside = and3(ge, le);
            if *not {
                // NOT BETWEEN is v < lo OR v > hi, which is NOT of the above.
                not3(inside)
            } else {
                inside
            }
        }
        T::In(not, v, list) => match value(v, p, conv)? {
            V::Str(s) => Some(list.contains(&s) != *not),
            _ => None,
        },
        T::Like(not, v, pat, escape) => match value(v, p, conv)? {
            V::Str(s) => Some(like(pat, escape.then_some('!'), &s) != *not),
            _ => None,
        },
        T::IsNull(not, v) => Some(value(v, p, conv).is_none() != *not),
        T::Not(e) => not3(truth(e, p, conv)),
        T::And(l, r) => and3(truth(l, p, conv), truth(r, p, conv)),
        T::Or(l, r) => or3(truth(l, p, conv), truth(r, p, conv)),
        other => match value(other, p, conv)? {
            V::Bool(b) => Some(b),
            _ => None,
        },
    }
}

// ---- generators ---------------------------------------------------------

fn small_str() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', 'b', 'é', '\'', ' ', '5', '%']),
        0..4,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn any_v() -> impl Strategy<Value = V> {
    prop_oneof![
        any::<bool>().prop_map(V::Bool),
        (-6i64..6).prop_map(V::Long),
        prop::sample::select(vec![i64::MIN, i64::MAX, -1, 0, 1]).prop_map(V::Long),
        (-12i32..12).prop_map(|n| V::Double(f64::from(n) / 4.0)),
        small_str().prop_map(V::Str),
        prop::sample::select(vec!["5", "2.5", "true", "-3", " 7 ", "x"])
            .prop_map(|s| V::Str(s.into())),
    ]
}

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "JMSPriority"];

fn num() -> impl Strategy<Value = T> {
    let leaf = prop_oneof![
        (-6i64..6).prop_map(|n| T::Lit(V::Long(n))),
        (-8i32..8).prop_map(|n| T::Lit(V::Double(f64::from(n) / 2.0))),
        prop::sample::select(vec!["a", "b", "JMSPriority"]).prop_map(T::Id),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| T::Neg(Box::new(e))),
            (
                prop::sample::select(vec!['+', '-', '*', '/', '%']),
                inner.clone(),
                inner
            )
                .prop_map(|(op, l, r)| T::Arith(op, Box::new(l), Box::new(r))),
        ]
    })
}

fn string() -> impl Strategy<Value = T> {
    prop_oneof![
        small_str().prop_map(|s| T::Lit(V::Str(s))),
        prop::sample::select(vec!["c", "e"]).prop_map(T::Id),
    ]
}

/// Any value-ish tree, with no regard for types.
fn anything() -> impl Strategy<Value = T> {
    prop_oneof![
        num(),
        string(),
        any_v().prop_map(T::Lit),
        prop::sample::select(NAMES.to_vec()).prop_map(T::Id),
    ]
}

/// Mostly strings, for IN and LIKE.
fn text_or_anything() -> impl Strategy<Value = T> {
    prop_oneof![3 => string(), 1 => anything()]
}

fn condition() -> impl Strategy<Value = T> {
    let ops = || prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]);
    let leaf = prop_oneof![
        1 => any::<bool>().prop_map(|b| T::Lit(V::Bool(b))),
        1 => prop::sample::select(vec!["d", "e", "a"]).prop_map(T::Id),
        4 => (ops(), num(), num()).prop_map(|(op, l, r)| T::Cmp(op, Box::new(l), Box::new(r))),
        2 => (ops(), string(), string()).prop_map(|(op, l, r)| T::Cmp(op, Box::new(l), Box::new(r))),
        1 => (ops(), anything(), anything()).prop_map(|(op, l, r)| T::Cmp(op, Box::new(l), Box::new(r))),
        1 => (any::<bool>(), num(), num(), num())
            .prop_map(|(not, v, lo, hi)| T::Between(not, Box::new(v), Box::new(lo), Box::new(hi))),
        1 => (any::<bool>(), anything(), anything(), anything())
            .prop_map(|(not, v, lo, hi)| T::Between(not, Box::new(v), Box::new(lo), Box::new(hi))),
        1 => (any::<bool>(), text_or_anything(), prop::collection::vec(small_str(), 1..4))
            .prop_map(|(not, v, l)| T::In(not, Box::new(v), l)),
        1 => (
            any::<bool>(),
            text_or_anything(),
            prop::collection::vec(prop::sample::select(vec!["a", "b", "%", "_", "!", "é", "'", "5"]), 0..6),
            any::<bool>()
        )
            .prop_map(|(not, v, p, esc)| T::Like(not, Box::new(v), p.concat(), esc)),
        1 => (any::<bool>(), anything()).prop_map(|(not, v)| T::IsNull(not, Box::new(v))),
    ];
    leaf.prop_recursive(4, 24, 2, move |inner| {
        prop_oneof![
            3 => inner.clone().prop_map(|e| T::Not(Box::new(e))),
            4 => (inner.clone(), inner.clone()).prop_map(|(l, r)| T::And(Box::new(l), Box::new(r))),
            4 => (inner.clone(), inner.clone()).prop_map(|(l, r)| T::Or(Box::new(l), Box::new(r))),
            // Rarely: a value where a condition belongs (a parse error).
            1 => (inner.clone(), anything()).prop_map(|(l, r)| T::And(Box::new(l), Box::new(r))),
            1 => (ops(), inner.clone(), inner).prop_map(|(op, l, r)| T::Cmp(op, Box::new(l), Box::new(r))),
        ]
    })
}

/// Mostly the type each name is used as (`a`, `JMSPriority` long, `b`
/// double, `c` string, `d` boolean), sometimes anything, sometimes unset;
/// `e` is usually unset.
fn properties() -> impl Strategy<Value = HashMap<&'static str, V>> {
    let typed = |usual: BoxedStrategy<V>, set: u32| {
        prop_oneof![
            set => usual.prop_map(Some),
            1 => any_v().prop_map(Some),
            1 => Just(None),
        ]
    };
    (
        typed((-6i64..6).prop_map(V::Long).boxed(), 8),
        typed(
            (-8i32..8)
                .prop_map(|n| V::Double(f64::from(n) / 2.0))
                .boxed(),
            8,
        ),
        typed(small_str().prop_map(V::Str).boxed(), 8),
        typed(any::<bool>().prop_map(V::Bool).boxed(), 8),
        typed(any_v().boxed(), 0),
        typed((0i64..10).prop_map(V::Long).boxed(), 8),
    )
        .prop_map(|(a, b, c, d, e, p)| {
            NAMES
                .iter()
                .zip([a, b, c, d, e, p])
                .filter_map(|(name, v)| v.map(|v| (*name, v)))
                .collect()
        })
}

fn as_fields(p: &HashMap<&str, V>) -> HashMap<String, Value<'static>> {
    p.iter()
        .map(|(k, v)| {
            let v = match v {
                V::Bool(b) => Value::Bool(*b),
                V::Long(n) => Value::Long(*n),
                V::Double(d) => Value::Double(*d),
                V::Str(s) => Value::Str(s.clone().into()),
            };
            ((*k).to_owned(), v)
        })
        .collect()
}

proptest! {
    // Enough that a wrong comparison operator is caught every run (checked
    // by breaking `<=` on purpose); about two seconds in a debug build.
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn eval_agrees_with_the_reference(
        tree in prop_oneof![12 => condition(), 1 => anything()],
        props in properties(),
        convert in any::<bool>(),
    ) {
        let text = render(&tree);
        let options = Options { convert_string_expressions: convert, ..Options::default() };
        let parsed = Selector::parse_with(&text, &options);
        if statically_wrong(&tree, true) {
            prop_assert!(parsed.is_err(), "{text} should not parse");
        } else {
            let sel = parsed.map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let expected = truth(&tree, &props, convert);
            prop_assert_eq!(sel.eval(&as_fields(&props)), expected, "{} with {:?}", text, props);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(sel) = Selector::parse(&text) {
            let _ = sel.eval(&as_fields(&HashMap::new()));
        }
    }

    #[test]
    fn token_soup_never_panics(
        words in prop::collection::vec(prop::sample::select(vec![
            "a", "b", "c", "d", "NOT", "AND", "OR", "BETWEEN", "IN", "LIKE", "ESCAPE", "IS", "NULL",
            "TRUE", "FALSE", "(", ")", ",", "=", "<>", "<", ">=", "+", "-", "*", "/", "%", "'x'",
            "'%_'", "'!'", "5", "0x1F", "07", "2.5", ".5e1", "9223372036854775808", "--", "/*", "*/",
            "'", "\"", "é",
        ]), 0..24),
        props in properties(),
        convert in any::<bool>(),
    ) {
        let text = words.join(" ");
        let options = Options { convert_string_expressions: convert, ..Options::default() };
        if let Ok(sel) = Selector::parse_with(&text, &options) {
            let _ = sel.eval(&as_fields(&props));
        }
    }
}
