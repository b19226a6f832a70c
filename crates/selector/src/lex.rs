//! The lexer: selector text to tokens, each with the char offset where it
//! starts. Built from small `winnow` parsers, one per token class; the loop
//! that picks the class by the first character also picks the error message,
//! so every lexical error names what went wrong in words a user knows.

use winnow::ascii::{digit0, digit1, hex_digit1, multispace0};
use winnow::combinator::{alt, opt};
use winnow::error::ContextError;
use winnow::prelude::*;
use winnow::token::{literal, one_of, take_till, take_while};

use crate::ParseError;

/// One token of selector text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A string literal, unescaped (`''` is one quote).
    Str(String),
    /// An exact numeric literal. Kept unsigned so that `-9223372036854775808`
    /// (whose magnitude does not fit in an i64) can be negated by the parser.
    Exact(u64),
    /// An approximate numeric literal.
    Approx(f64),
    /// An identifier (never a keyword).
    Ident(String),
    /// A keyword (matched case-insensitively).
    Kw(Kw),
    /// An operator or punctuation.
    Op(Op),
}

/// The reserved words of the selector language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    Not,
    And,
    Or,
    Between,
    Like,
    Escape,
    In,
    Is,
    True,
    False,
    Null,
}

/// Operators and punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    LParen,
    RParen,
    Comma,
}

/// A token and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// Char offset (0-based) of the token's first character.
    pub(crate) pos: usize,
    /// The token as written (for messages).
    pub(crate) text: String,
}

/// Keywords by their upper-case spelling.
fn keyword(word: &str) -> Option<Kw> {
    const KWS: [(&str, Kw); 11] = [
        ("NOT", Kw::Not),
        ("AND", Kw::And),
        ("OR", Kw::Or),
        ("BETWEEN", Kw::Between),
        ("LIKE", Kw::Like),
        ("ESCAPE", Kw::Escape),
        ("IN", Kw::In),
        ("IS", Kw::Is),
        ("TRUE", Kw::True),
        ("FALSE", Kw::False),
        ("NULL", Kw::Null),
    ];
    KWS.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(word))
        .map(|&(_, kw)| kw)
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_ident_part(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// `'...'` with `''` as an escaped quote; the content, unescaped.
fn string_lit(input: &mut &str) -> winnow::Result<String> {
    '\''.parse_next(input)?;
    let mut out = String::new();
    loop {
        let chunk = take_till(0.., '\'').parse_next(input)?;
        out.push_str(chunk);
        '\''.parse_next(input)?;
        if opt('\'').parse_next(input)?.is_some() {
            out.push('\'');
        } else {
            return Ok(out);
        }
    }
}

fn exponent<'i>(input: &mut &'i str) -> winnow::Result<&'i str> {
    (one_of(['e', 'E']), opt(one_of(['+', '-'])), digit1)
        .take()
        .parse_next(input)
}

/// The approximate forms: `5.5`, `5.`, `5.5E10`, `.5`, `.5E10`, `5E10`,
/// each with an optional `f`/`d` suffix (Java's).
fn float_lit<'i>(input: &mut &'i str) -> winnow::Result<&'i str> {
    let body = alt((
        (digit1, '.', digit0, opt(exponent)).take(),
        ('.', digit1, opt(exponent)).take(),
        (digit1, exponent).take(),
    ))
    .parse_next(input)?;
    opt(one_of(['f', 'F', 'd', 'D'])).parse_next(input)?;
    Ok(body)
}

fn hex_lit<'i>(input: &mut &'i str) -> winnow::Result<&'i str> {
    ('0', one_of(['x', 'X']), hex_digit1)
        .map(|(_, _, digits)| digits)
        .parse_next(input)
}

/// Decimal (or octal, when it starts with `0`) digits with an optional
/// `L` suffix.
fn int_lit<'i>(input: &mut &'i str) -> winnow::Result<&'i str> {
    let digits = digit1.parse_next(input)?;
    opt(one_of(['l', 'L'])).parse_next(input)?;
    Ok(digits)
}

fn operator(input: &mut &str) -> winnow::Result<Op> {
    let two: winnow::Result<&str> =
        alt((literal("<>"), literal("<="), literal(">="))).parse_next(input);
    let text = match two {
        Ok(text) => text,
        Err(_) => one_of(['<', '>', '=', '+', '-', '*', '/', '%', '(', ')', ','])
            .take()
            .parse_next(input)?,
    };
    Ok(match text {
        "<>" => Op::Ne,
        "<=" => Op::Le,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        ">" => Op::Gt,
        "=" => Op::Eq,
        "+" => Op::Plus,
        "-" => Op::Minus,
        "*" => Op::Star,
        "/" => Op::Slash,
        "%" => Op::Percent,
        "(" => Op::LParen,
        ")" => Op::RParen,
        _ => Op::Comma,
    })
}

/// Operators other languages have and selectors do not; named in the error.
fn unknown_operator(input: &mut &str) -> winnow::Result<&'static str> {
    alt((
        literal("==").value("'==' (use '=')"),
        literal("!=").value("'!=' (use '<>')"),
        literal("&&").value("'&&' (use AND)"),
        literal("||").value("'||' (use OR)"),
        literal("!").value("'!' (use NOT)"),
        literal("&").value("'&' (use AND)"),
        literal("|").value("'|' (use OR)"),
        literal("^").value("'^'"),
        literal("~").value("'~'"),
    ))
    .parse_next(input)
}

/// Whitespace and ActiveMQ's comments (`-- to end of line`, `/* ... */`).
/// An unterminated block comment is an error at its start.
fn skip_blanks(input: &mut &str, chars: &mut Cursor<'_>) -> Result<(), ParseError> {
    loop {
        let _: winnow::Result<&str> = multispace0.parse_next(input);
        if input.starts_with("--") {
            let _: winnow::Result<&str> = take_till(0.., ['\n', '\r']).parse_next(input);
        } else if input.starts_with("/*") {
            match input[2..].find("*/") {
                Some(end) => *input = &input[2 + end + 2..],
                None => {
                    return Err(ParseError::new(
                        chars.at(input),
                        "unterminated comment (missing '*/')",
                    ));
                }
            }
        } else {
            return Ok(());
        }
    }
}

/// Turns byte positions (known from how much input is left) into char
/// offsets, walking forward only, so lexing stays linear.
struct Cursor<'t> {
    text: &'t str,
    byte: usize,
    chars: usize,
}

impl Cursor<'_> {
    fn at(&mut self, rest: &str) -> usize {
        let byte = self.text.len() - rest.len();
        if byte >= self.byte {
            self.chars += self.text[self.byte..byte].chars().count();
        } else {
            self.chars = self.text[..byte].chars().count();
        }
        self.byte = byte;
        self.chars
    }
}

fn malformed(pos: usize, text: &str) -> ParseError {
    ParseError::new(pos, format!("malformed number '{text}'"))
}

/// Parses an integer literal's digits in `radix`; too big for 64 bits is an error.
fn int_value(digits: &str, radix: u32, pos: usize, text: &str) -> Result<u64, ParseError> {
    u64::from_str_radix(digits, radix).map_err(|_| {
        ParseError::new(
            pos,
            format!("integer literal '{text}' is too large for a 64-bit integer"),
        )
    })
}

/// Splits `text` into tokens.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut input = text;
    let mut chars = Cursor {
        text,
        byte: 0,
        chars: 0,
    };
    let mut out = Vec::new();
    loop {
        skip_blanks(&mut input, &mut chars)?;
        let Some(first) = input.chars().next() else {
            return Ok(out);
        };
        let pos = chars.at(input);
        let start = input;
        let second = input[first.len_utf8()..].chars().next();
        let tok = if first == '\'' {
            let s = string_lit
                .parse_next(&mut input)
                .map_err(|_| ParseError::new(pos, "unterminated string literal"))?;
            Tok::Str(s)
        } else if first.is_ascii_digit()
            || (first == '.' && second.is_some_and(|c| c.is_ascii_digit()))
        {
            let tok = if let Ok(f) = float_lit.parse_next(&mut input) {
                let value: f64 = f.parse().map_err(|_| malformed(pos, f))?;
                Tok::Approx(value)
            } else if let Ok(hex) = {
                input = start;
                hex_lit.parse_next(&mut input)
            } {
                let whole = &start[..start.len() - input.len()];
                Tok::Exact(int_value(hex, 16, pos, whole)?)
            } else if let Ok(digits) = {
                input = start;
                int_lit.parse_next(&mut input)
            } {
                let whole = &start[..start.len() - input.len()];
                if digits.len() > 1 && digits.starts_with('0') {
                    if whole.ends_with(['l', 'L']) || digits.bytes().any(|b| b > b'7') {
                        return Err(ParseError::new(
                            pos,
                            format!("malformed octal literal '{whole}'"),
                        ));
                    }
                    Tok::Exact(int_value(&digits[1..], 8, pos, whole)?)
                } else {
                    Tok::Exact(int_value(digits, 10, pos, whole)?)
                }
            } else {
                // Unreachable in practice: a digit always starts an int.
                return Err(malformed(pos, &start[..first.len_utf8()]));
            };
            // `5abc`, `0x`, `1.5.5`: a number runs straight into more word.
            if let Some(c) = input.chars().next()
                && (is_ident_part(c) || c == '.')
            {
                let end = input
                    .find(|c: char| !(is_ident_part(c) || c == '.'))
                    .unwrap_or(input.len());
                let consumed = start.len() - input.len() + end;
                return Err(malformed(pos, &start[..consumed]));
            }
            tok
        } else if is_ident_start(first) {
            let word: &str = take_while(1.., is_ident_part)
                .parse_next(&mut input)
                .map_err(|_: ContextError| malformed(pos, ""))?;
            match keyword(word) {
                Some(kw) => Tok::Kw(kw),
                None => Tok::Ident(word.to_owned()),
            }
        } else if first == '"' {
            return Err(ParseError::new(
                pos,
                "double-quoted identifiers are not supported (string literals use single quotes)",
            ));
        } else if let Ok(what) = unknown_operator.parse_next(&mut input) {
            return Err(ParseError::new(pos, format!("unknown operator {what}")));
        } else if let Ok(op) = {
            input = start;
            operator.parse_next(&mut input)
        } {
            Tok::Op(op)
        } else {
            return Err(ParseError::new(
                pos,
                format!("unexpected character {first:?}"),
            ));
        };
        let consumed = start.len() - input.len();
        out.push(Token {
            tok,
            pos,
            text: start[..consumed].to_owned(),
        });
    }
}
