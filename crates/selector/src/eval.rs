//! The syntax tree and its evaluation with SQL's three-valued logic.
//!
//! Evaluation borrows: string literals are lent from the tree and property
//! values from the [`Fields`] as they come (`Cow::Borrowed` stays borrowed),
//! so a match allocates nothing unless the fields hand out owned strings.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::like::Pattern;
use crate::{Fields, Value};

/// `+ - * / %`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// `= <> < <= > >=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }

    /// Strings and booleans have only equality: `<` on them is UNKNOWN.
    fn equality(self, equal: bool) -> Option<bool> {
        match self {
            CmpOp::Eq => Some(equal),
            CmpOp::Ne => Some(!equal),
            _ => None,
        }
    }
}

/// A parsed selector expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(Box<str>),
    Ident(Box<str>),
    Neg(Box<Expr>),
    Pos(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Between {
        not: bool,
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
    },
    In {
        not: bool,
        value: Box<Expr>,
        /// Sorted and without duplicates, for a binary search.
        list: Box<[Box<str>]>,
    },
    Like {
        not: bool,
        value: Box<Expr>,
        pattern: Pattern,
    },
    IsNull {
        not: bool,
        value: Box<Expr>,
    },
    Not(Box<Expr>),
    And(Box<[Expr]>),
    Or(Box<[Expr]>),
}

/// What an expression yields, as far as the parser can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Number,
    String,
    /// An identifier: any type, known only at run time.
    Any,
}

impl Expr {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Expr::Long(_) | Expr::Double(_) | Expr::Neg(_) | Expr::Pos(_) | Expr::Arith(..) => {
                Kind::Number
            }
            Expr::Str(_) => Kind::String,
            Expr::Ident(_) => Kind::Any,
            _ => Kind::Bool,
        }
    }
}

/// Evaluation settings fixed at parse time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) convert: bool,
}

impl Ctx {
    /// The truth of a boolean expression: `None` is UNKNOWN.
    pub(crate) fn truth<'a, F: Fields + ?Sized>(self, e: &'a Expr, f: &'a F) -> Option<bool> {
        match e {
            Expr::Cmp(op, l, r) => {
                let l = self.value(l, f)?;
                let r = self.value(r, f)?;
                self.compare(*op, &l, &r)
            }
            Expr::Between {
                not,
                value,
                low,
                high,
            } => {
                let v = self.value(value, f)?;
                let low = self.value(low, f);
                let high = self.value(high, f);
                let cmp = |op, bound: &Option<Value<'_>>| {
                    bound.as_ref().and_then(|b| self.compare(op, &v, b))
                };
                if *not {
                    or2(cmp(CmpOp::Lt, &low), cmp(CmpOp::Gt, &high))
                } else {
                    and2(cmp(CmpOp::Ge, &low), cmp(CmpOp::Le, &high))
                }
            }
            Expr::In { not, value, list } => match self.value(value, f)? {
                Value::Str(s) => {
                    let found = list.binary_search_by(|item| (**item).cmp(&*s)).is_ok();
                    Some(found != *not)
                }
                _ => None,
            },
            Expr::Like {
                not,
                value,
                pattern,
            } => match self.value(value, f)? {
                Value::Str(s) => Some(pattern.matches(&s) != *not),
                _ => None,
            },
            Expr::IsNull { not, value } => Some(self.value(value, f).is_none() != *not),
            Expr::Not(inner) => self.truth(inner, f).map(|b| !b),
            Expr::And(items) => {
                let mut result = Some(true);
                for item in items.iter() {
                    match self.truth(item, f) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => result = None,
                    }
                }
                result
            }
            Expr::Or(items) => {
                let mut result = Some(false);
                for item in items.iter() {
                    match self.truth(item, f) {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => result = None,
                    }
                }
                result
            }
            // A value in a boolean place: only a boolean has a truth.
            other => match self.value(other, f)? {
                Value::Bool(b) => Some(b),
                _ => None,
            },
        }
    }

    /// The value of an expression: `None` is NULL (or UNKNOWN, which for a
    /// value is the same thing).
    fn value<'a, F: Fields + ?Sized>(self, e: &'a Expr, f: &'a F) -> Option<Value<'a>> {
        match e {
            Expr::Bool(b) => Some(Value::Bool(*b)),
            Expr::Long(n) => Some(Value::Long(*n)),
            Expr::Double(d) => Some(Value::Double(*d)),
            Expr::Str(s) => Some(Value::Str(Cow::Borrowed(s))),
            Expr::Ident(name) => f.get(name),
            Expr::Neg(inner) => match self.value(inner, f)? {
                Value::Long(n) => Some(Value::Long(n.wrapping_neg())),
                Value::Double(d) => Some(Value::Double(-d)),
                _ => None,
            },
            Expr::Pos(inner) => match self.value(inner, f)? {
                v @ (Value::Long(_) | Value::Double(_)) => Some(v),
                _ => None,
            },
            Expr::Arith(op, l, r) => {
                let l = self.value(l, f)?;
                let r = self.value(r, f)?;
                arith(*op, &l, &r)
            }
            boolean => self.truth(boolean, f).map(Value::Bool),
        }
    }

    fn compare(self, op: CmpOp, l: &Value<'_>, r: &Value<'_>) -> Option<bool> {
        match (l, r) {
            (Value::Long(a), Value::Long(b)) => Some(op.holds(a.cmp(b))),
            (Value::Long(a), Value::Double(b)) => doubles(op, *a as f64, *b),
            (Value::Double(a), Value::Long(b)) => doubles(op, *a, *b as f64),
            (Value::Double(a), Value::Double(b)) => doubles(op, *a, *b),
            (Value::Str(a), Value::Str(b)) => op.equality(a == b),
            (Value::Bool(a), Value::Bool(b)) => op.equality(a == b),
            _ if self.convert => convert_compare(op, l, r),
            _ => None,
        }
    }
}

/// ActiveMQ's `convertStringExpressions`: the string side takes the other
/// side's type (an integer must parse as one, a double as one; a boolean is
/// true for "true" in any case and false for anything else). A string that
/// does not convert makes the comparison UNKNOWN.
fn convert_compare(op: CmpOp, l: &Value<'_>, r: &Value<'_>) -> Option<bool> {
    match (l, r) {
        (Value::Str(s), Value::Long(n)) => parse_long(s).map(|v| op.holds(v.cmp(n))),
        (Value::Long(n), Value::Str(s)) => parse_long(s).map(|v| op.holds(n.cmp(&v))),
        (Value::Str(s), Value::Double(d)) => parse_double(s).and_then(|v| doubles(op, v, *d)),
        (Value::Double(d), Value::Str(s)) => parse_double(s).and_then(|v| doubles(op, *d, v)),
        (Value::Str(s), Value::Bool(b)) => op.equality(s.eq_ignore_ascii_case("true") == *b),
        (Value::Bool(b), Value::Str(s)) => op.equality(*b == s.eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// Java's `Long.valueOf`: an optional sign and decimal digits, nothing else.
fn parse_long(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// Java's `Double.valueOf`, near enough: surrounding blanks ignored, an
/// optional `f`/`d` suffix.
fn parse_double(s: &str) -> Option<f64> {
    let s = s.trim_matches(|c: char| c <= ' ');
    let s = s
        .strip_suffix(['f', 'F', 'd', 'D'])
        .filter(|rest| rest.ends_with(|c: char| c.is_ascii_digit() || c == '.'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Numeric comparison; NaN compares with nothing (UNKNOWN).
fn doubles(op: CmpOp, a: f64, b: f64) -> Option<bool> {
    a.partial_cmp(&b).map(|ord| op.holds(ord))
}

/// Arithmetic with Java's promotion: long op long is a long (wrapping on
/// overflow, as Java does), a double on either side makes a double. Integer
/// division or remainder by zero is UNKNOWN (Java would throw).
fn arith(op: ArithOp, l: &Value<'_>, r: &Value<'_>) -> Option<Value<'static>> {
    match (l, r) {
        (Value::Long(a), Value::Long(b)) => {
            let (a, b) = (*a, *b);
            let n = match op {
                ArithOp::Add => a.wrapping_add(b),
                ArithOp::Sub => a.wrapping_sub(b),
                ArithOp::Mul => a.wrapping_mul(b),
                ArithOp::Div => a
                    .checked_div(b)
                    .or_else(|| (b != 0).then(|| a.wrapping_div(b)))?,
                ArithOp::Mod => a
                    .checked_rem(b)
                    .or_else(|| (b != 0).then(|| a.wrapping_rem(b)))?,
            };
            Some(Value::Long(n))
        }
        (Value::Long(_) | Value::Double(_), Value::Long(_) | Value::Double(_)) => {
            let (a, b) = (as_f64(l)?, as_f64(r)?);
            Some(Value::Double(match op {
                ArithOp::Add => a + b,
                ArithOp::Sub => a - b,
                ArithOp::Mul => a * b,
                ArithOp::Div => a / b,
                ArithOp::Mod => a % b,
            }))
        }
        _ => None,
    }
}

fn as_f64(v: &Value<'_>) -> Option<f64> {
    match v {
        Value::Long(n) => Some(*n as f64),
        Value::Double(d) => Some(*d),
        _ => None,
    }
}

/// Three-valued AND of two.
fn and2(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Three-valued OR of two.
fn or2(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}
