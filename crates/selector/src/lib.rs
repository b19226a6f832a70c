//! JMS message selectors: the SQL-92 subset of JMS 1.1/2.0 (section 3.8.1)
//! that picks which messages a consumer receives, as ActiveMQ 5.17 accepts
//! it. No dependency on the broker: a selector reads a message only through
//! [`Fields`]. The language is described for users in `docs/SELECTORS.md`.
//!
//! ```
//! use std::collections::HashMap;
//! use halyard_selector::{Selector, Value};
//!
//! let sel = Selector::parse("color = 'red' AND weight > 2.5").unwrap();
//! let mut msg: HashMap<String, Value<'static>> = HashMap::new();
//! msg.insert("color".into(), Value::Str("red".into()));
//! msg.insert("weight".into(), Value::Double(3.0));
//! assert!(sel.matches(&msg));
//! msg.remove("weight");
//! assert_eq!(sel.eval(&msg), None); // UNKNOWN: weight is not set
//! ```
//!
//! Parsing happens once, when a consumer subscribes, into a syntax tree;
//! evaluation walks the tree without allocating (string literals and
//! property values are compared by reference).
//!
//! The lexer is written with [`winnow`]: it is small, fast, stable (1.0),
//! needs no build script or generated code (unlike a parser generator), and
//! keeps the exact position in the input, which our error messages report.
//! The grammar itself is a hand-written precedence climber over the tokens,
//! because that is where the nesting limits and the messages that name the
//! offending operator ("expected an expression after 'AND'") are easiest to
//! get exactly right.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

mod eval;
mod lex;
mod like;
mod parse;

/// Longest selector text accepted by default, in bytes.
pub const DEFAULT_MAX_LEN: usize = 4096;
/// Deepest nesting (parentheses, NOT chains, operators) accepted.
pub const MAX_DEPTH: usize = 64;
/// Most items in an IN list.
pub const MAX_IN_LIST: usize = 1024;

/// How a selector is parsed and evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// ActiveMQ's `convertStringExpressions`: a string compared with a number
    /// or boolean is converted to that type first. STOMP turns it on because
    /// every STOMP header is a string.
    pub convert_string_expressions: bool,
    /// Longest selector text accepted, in bytes.
    pub max_len: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            convert_string_expressions: false,
            max_len: DEFAULT_MAX_LEN,
        }
    }
}

/// A value a selector reads or computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A boolean.
    Bool(bool),
    /// An exact number (byte, short, int and long properties).
    Long(i64),
    /// An approximate number (float and double properties).
    Double(f64),
    /// A string.
    Str(Cow<'a, str>),
}

/// What a selector reads: message properties and JMS header fields by name
/// (case-sensitive). `None` = not set (NULL).
pub trait Fields {
    /// The value of `name`, if the message has it.
    fn get(&self, name: &str) -> Option<Value<'_>>;
}

impl Fields for HashMap<String, Value<'static>> {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        HashMap::get(self, name).map(|v| match v {
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
            Value::Bool(b) => Value::Bool(*b),
            Value::Long(n) => Value::Long(*n),
            Value::Double(d) => Value::Double(*d),
        })
    }
}

impl<T: Fields + ?Sized> Fields for &T {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        (**self).get(name)
    }
}

/// Why a selector was refused, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid selector at position {position}: {message}")]
pub struct ParseError {
    /// Char offset (0-based) in the selector text.
    pub position: usize,
    /// What is wrong, for people.
    pub message: String,
}

impl ParseError {
    fn new(position: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            position,
            message: message.into(),
        }
    }
}

/// A parsed selector, ready to evaluate against any number of messages.
#[derive(Debug, Clone)]
pub struct Selector {
    text: Box<str>,
    expr: eval::Expr,
    ctx: eval::Ctx,
}

impl Selector {
    /// Parses `text` with the default [`Options`].
    pub fn parse(text: &str) -> Result<Selector, ParseError> {
        Selector::parse_with(text, &Options::default())
    }

    /// Parses `text`.
    pub fn parse_with(text: &str, options: &Options) -> Result<Selector, ParseError> {
        if text.len() > options.max_len {
            return Err(ParseError::new(
                0,
                format!(
                    "the selector is {} bytes long, more than the limit of {} bytes",
                    text.len(),
                    options.max_len
                ),
            ));
        }
        let tokens = lex::tokenize(text)?;
        let expr = parse::Parser::new(&tokens, text.chars().count()).selector()?;
        Ok(Selector {
            text: text.into(),
            expr,
            ctx: eval::Ctx {
                convert: options.convert_string_expressions,
            },
        })
    }

    /// Empty or all-whitespace text means "no selector": `Ok(None)`.
    pub fn parse_optional(text: &str, options: &Options) -> Result<Option<Selector>, ParseError> {
        if text.trim().is_empty() && text.len() <= options.max_len {
            return Ok(None);
        }
        Selector::parse_with(text, options).map(Some)
    }

    /// The text as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The selector's truth for a message: `None` is UNKNOWN (which does not
    /// select the message).
    pub fn eval<F: Fields + ?Sized>(&self, fields: &F) -> Option<bool> {
        self.ctx.truth(&self.expr, fields)
    }

    /// Whether the selector selects the message (`eval` is `Some(true)`).
    pub fn matches<F: Fields + ?Sized>(&self, fields: &F) -> bool {
        self.eval(fields) == Some(true)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests;
