//! The parser: tokens to a syntax tree, by precedence climbing in the JMS
//! order (lowest first): OR, AND, NOT, comparisons (`= <> < <= > >=`,
//! BETWEEN, IN, LIKE, IS NULL), `+ -`, `* / %`, unary `+ -`.
//!
//! Depth is bounded twice: the recursion itself (parentheses, NOT and sign
//! chains) and the depth of the tree it builds (operators), both at
//! [`MAX_DEPTH`], so neither the parser nor anything walking the tree later
//! can run out of stack.

use crate::eval::{ArithOp, CmpOp, Expr, Kind};
use crate::lex::{Kw, Op, Tok, Token};
use crate::like::Pattern;
use crate::{MAX_DEPTH, MAX_IN_LIST, ParseError};

/// An expression with the depth of its tree and where it starts.
struct Node {
    expr: Expr,
    depth: usize,
    pos: usize,
}

pub(crate) struct Parser<'t> {
    tokens: &'t [Token],
    next: usize,
    /// Char length of the whole text: the position of "the end".
    end: usize,
    /// Current recursion depth.
    nesting: usize,
}

impl<'t> Parser<'t> {
    pub(crate) fn new(tokens: &'t [Token], end: usize) -> Parser<'t> {
        Parser {
            tokens,
            next: 0,
            end,
            nesting: 0,
        }
    }

    /// The whole selector: one boolean expression and nothing after it.
    pub(crate) fn selector(mut self) -> Result<Expr, ParseError> {
        if self.tokens.is_empty() {
            return Err(ParseError::new(0, "the selector is empty"));
        }
        let node = self.or()?;
        if let Some(t) = self.peek() {
            let message = match t.tok {
                Tok::Op(Op::RParen) => "unbalanced ')' (no '(' to close)".to_owned(),
                _ => format!("unexpected '{}' after a complete expression", t.text),
            };
            return Err(ParseError::new(t.pos, message));
        }
        boolean(node)
    }

    fn peek(&self) -> Option<&'t Token> {
        self.tokens.get(self.next)
    }

    fn peek_tok(&self) -> Option<&'t Tok> {
        self.peek().map(|t| &t.tok)
    }

    fn bump(&mut self) -> Option<&'t Token> {
        let t = self.tokens.get(self.next);
        if t.is_some() {
            self.next += 1;
        }
        t
    }

    fn eat_kw(&mut self, kw: Kw) -> Option<&'t Token> {
        if self.peek_tok() == Some(&Tok::Kw(kw)) {
            self.bump()
        } else {
            None
        }
    }

    fn eat_op(&mut self, op: Op) -> Option<&'t Token> {
        if self.peek_tok() == Some(&Tok::Op(op)) {
            self.bump()
        } else {
            None
        }
    }

    /// Position of the next token, or the end.
    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    /// "after 'X'" for the token just consumed.
    fn after(&self) -> String {
        match self.next.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(t) => format!(" after '{}'", t.text),
            None => String::new(),
        }
    }

    /// An error at the next token saying what was expected there.
    fn expected(&self, what: &str) -> ParseError {
        let found = match self.peek() {
            Some(t) => format!(", found '{}'", t.text),
            None => ", but the selector ends".to_owned(),
        };
        ParseError::new(
            self.here(),
            format!("expected {what}{}{found}", self.after()),
        )
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(pos));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        let first = self.and()?;
        if self.peek_tok() != Some(&Tok::Kw(Kw::Or)) {
            return Ok(first);
        }
        let pos = first.pos;
        let mut depth = first.depth;
        let mut items = vec![boolean(first)?];
        while self.eat_kw(Kw::Or).is_some() {
            let next = self.and()?;
            depth = depth.max(next.depth);
            items.push(boolean(next)?);
        }
        node(Expr::Or(items.into_boxed_slice()), depth + 1, pos)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        let first = self.not()?;
        if self.peek_tok() != Some(&Tok::Kw(Kw::And)) {
            return Ok(first);
        }
        let pos = first.pos;
        let mut depth = first.depth;
        let mut items = vec![boolean(first)?];
        while self.eat_kw(Kw::And).is_some() {
            let next = self.not()?;
            depth = depth.max(next.depth);
            items.push(boolean(next)?);
        }
        node(Expr::And(items.into_boxed_slice()), depth + 1, pos)
    }

    fn not(&mut self) -> Result<Node, ParseError> {
        let Some(t) = self.eat_kw(Kw::Not) else {
            return self.comparison();
        };
        self.enter(t.pos)?;
        let inner = self.not()?;
        self.leave();
        let depth = inner.depth + 1;
        node(Expr::Not(Box::new(boolean(inner)?)), depth, t.pos)
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        let mut left = self.additive()?;
        loop {
            let Some(t) = self.peek() else {
                return Ok(left);
            };
            let pos = left.pos;
            left = match t.tok {
                Tok::Op(op @ (Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge)) => {
                    self.bump();
                    let op = match op {
                        Op::Eq => CmpOp::Eq,
                        Op::Ne => CmpOp::Ne,
                        Op::Lt => CmpOp::Lt,
                        Op::Le => CmpOp::Le,
                        Op::Gt => CmpOp::Gt,
                        _ => CmpOp::Ge,
                    };
                    let right = self.additive()?;
                    let depth = left.depth.max(right.depth) + 1;
                    node(
                        Expr::Cmp(op, Box::new(left.expr), Box::new(right.expr)),
                        depth,
                        pos,
                    )?
                }
                Tok::Kw(Kw::Is) => {
                    self.bump();
                    let not = self.eat_kw(Kw::Not).is_some();
                    if self.eat_kw(Kw::Null).is_none() {
                        return Err(self.expected(if not { "NULL" } else { "NULL or NOT NULL" }));
                    }
                    let depth = left.depth + 1;
                    node(
                        Expr::IsNull {
                            not,
                            value: Box::new(left.expr),
                        },
                        depth,
                        pos,
                    )?
                }
                Tok::Kw(Kw::Not) => {
                    // Only as `NOT BETWEEN`, `NOT IN`, `NOT LIKE` here.
                    self.bump();
                    match self.peek_tok() {
                        Some(Tok::Kw(Kw::Between | Kw::In | Kw::Like)) => {
                            self.predicate(left, true)?
                        }
                        _ => return Err(self.expected("BETWEEN, IN or LIKE")),
                    }
                }
                Tok::Kw(Kw::Between | Kw::In | Kw::Like) => self.predicate(left, false)?,
                _ => return Ok(left),
            };
        }
    }

    /// BETWEEN, IN or LIKE (the next token), after `left` and an optional NOT.
    fn predicate(&mut self, left: Node, not: bool) -> Result<Node, ParseError> {
        let pos = left.pos;
        let value = Box::new(left.expr);
        match self.bump().map(|t| &t.tok) {
            Some(Tok::Kw(Kw::Between)) => {
                let low = self.additive()?;
                if self.eat_kw(Kw::And).is_none() {
                    return Err(self.expected("AND (of BETWEEN ... AND ...)"));
                }
                let high = self.additive()?;
                let depth = left.depth.max(low.depth).max(high.depth) + 2;
                node(
                    Expr::Between {
                        not,
                        value,
                        low: Box::new(low.expr),
                        high: Box::new(high.expr),
                    },
                    depth,
                    pos,
                )
            }
            Some(Tok::Kw(Kw::In)) => {
                if self.eat_op(Op::LParen).is_none() {
                    return Err(self.expected("'('"));
                }
                let mut list: Vec<Box<str>> = Vec::new();
                loop {
                    match self.peek() {
                        Some(Token {
                            tok: Tok::Str(s),
                            pos,
                            ..
                        }) => {
                            if list.len() == MAX_IN_LIST {
                                return Err(ParseError::new(
                                    *pos,
                                    format!("an IN list may have at most {MAX_IN_LIST} items"),
                                ));
                            }
                            list.push(s.as_str().into());
                            self.bump();
                        }
                        Some(_) => {
                            return Err(
                                self.expected("a string literal (IN lists hold strings only)")
                            );
                        }
                        None => return Err(self.expected("a string literal")),
                    }
                    if self.eat_op(Op::Comma).is_some() {
                        continue;
                    }
                    if self.eat_op(Op::RParen).is_some() {
                        break;
                    }
                    return Err(self.expected("',' or ')' in the IN list"));
                }
                list.sort_unstable();
                list.dedup();
                node(
                    Expr::In {
                        not,
                        value,
                        list: list.into_boxed_slice(),
                    },
                    left.depth + 1,
                    pos,
                )
            }
            _ => {
                // LIKE
                let pattern = match self.peek() {
                    Some(Token {
                        tok: Tok::Str(s), ..
                    }) => {
                        self.bump();
                        s
                    }
                    _ => return Err(self.expected("a string literal (the LIKE pattern)")),
                };
                let mut escape = None;
                if self.eat_kw(Kw::Escape).is_some() {
                    match self.peek() {
                        Some(Token {
                            tok: Tok::Str(s),
                            pos: epos,
                            ..
                        }) => {
                            self.bump();
                            let mut chars = s.chars();
                            match (chars.next(), chars.next()) {
                                (Some(c), None) => escape = Some(c),
                                _ => {
                                    return Err(ParseError::new(
                                        *epos,
                                        format!(
                                            "the ESCAPE string must be exactly one character, not '{s}'"
                                        ),
                                    ));
                                }
                            }
                        }
                        _ => return Err(self.expected("a one-character string literal")),
                    }
                }
                node(
                    Expr::Like {
                        not,
                        value,
                        pattern: Pattern::new(pattern, escape),
                    },
                    left.depth + 1,
                    pos,
                )
            }
        }
    }

    fn additive(&mut self) -> Result<Node, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek_tok() {
                Some(Tok::Op(Op::Plus)) => ArithOp::Add,
                Some(Tok::Op(Op::Minus)) => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.multiplicative()?;
            left = arith(op, left, right)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek_tok() {
                Some(Tok::Op(Op::Star)) => ArithOp::Mul,
                Some(Tok::Op(Op::Slash)) => ArithOp::Div,
                Some(Tok::Op(Op::Percent)) => ArithOp::Mod,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = arith(op, left, right)?;
        }
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let negate = match self.peek_tok() {
            Some(Tok::Op(Op::Minus)) => true,
            Some(Tok::Op(Op::Plus)) => false,
            _ => return self.primary(),
        };
        let Some(sign) = self.bump() else {
            return self.primary();
        };
        // `-9223372036854775808`: the one literal whose magnitude only fits
        // negated.
        if negate
            && let Some(Token {
                tok: Tok::Exact(n),
                pos,
                text,
            }) = self.peek()
        {
            self.bump();
            let value = 0i128 - i128::from(*n);
            let value = i64::try_from(value).map_err(|_| too_large(*pos, text))?;
            return node(Expr::Long(value), 1, sign.pos);
        }
        self.enter(sign.pos)?;
        let inner = self.unary()?;
        self.leave();
        let depth = inner.depth + 1;
        let boxed = Box::new(inner.expr);
        node(
            if negate {
                Expr::Neg(boxed)
            } else {
                Expr::Pos(boxed)
            },
            depth,
            sign.pos,
        )
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let Some(t) = self.peek() else {
            return Err(self.expected("an expression"));
        };
        let expr = match &t.tok {
            Tok::Str(s) => Expr::Str(s.as_str().into()),
            Tok::Exact(n) => Expr::Long(i64::try_from(*n).map_err(|_| too_large(t.pos, &t.text))?),
            Tok::Approx(d) => Expr::Double(*d),
            Tok::Kw(Kw::True) => Expr::Bool(true),
            Tok::Kw(Kw::False) => Expr::Bool(false),
            Tok::Kw(Kw::Null) => {
                return Err(ParseError::new(
                    t.pos,
                    "NULL can only be tested with IS NULL or IS NOT NULL",
                ));
            }
            Tok::Ident(name) => {
                let xpath =
                    name.eq_ignore_ascii_case("XPATH") || name.eq_ignore_ascii_case("XQUERY");
                if xpath
                    && matches!(
                        self.tokens.get(self.next + 1).map(|t| &t.tok),
                        Some(Tok::Str(_))
                    )
                {
                    return Err(ParseError::new(
                        t.pos,
                        "XPath and XQuery selectors are not supported",
                    ));
                }
                Expr::Ident(name.as_str().into())
            }
            Tok::Op(Op::LParen) => {
                self.bump();
                self.enter(t.pos)?;
                let inner = self.or()?;
                self.leave();
                if self.eat_op(Op::RParen).is_none() {
                    let found = match self.peek() {
                        Some(f) => format!("found '{}'", f.text),
                        None => "the selector ends".to_owned(),
                    };
                    return Err(ParseError::new(
                        self.here(),
                        format!(
                            "expected ')' to close the '(' at position {}, but {found}",
                            t.pos
                        ),
                    ));
                }
                return Ok(Node {
                    expr: inner.expr,
                    depth: inner.depth,
                    pos: t.pos,
                });
            }
            _ => return Err(self.expected("an expression")),
        };
        self.bump();
        Ok(Node {
            expr,
            depth: 1,
            pos: t.pos,
        })
    }
}

fn node(expr: Expr, depth: usize, pos: usize) -> Result<Node, ParseError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(pos));
    }
    Ok(Node { expr, depth, pos })
}

fn arith(op: ArithOp, left: Node, right: Node) -> Result<Node, ParseError> {
    let depth = left.depth.max(right.depth) + 1;
    node(
        Expr::Arith(op, Box::new(left.expr), Box::new(right.expr)),
        depth,
        left.pos,
    )
}

/// A node in a boolean place (the whole selector, AND, OR, NOT): a number or
/// string can never be true there, so say so now rather than never match.
fn boolean(node: Node) -> Result<Expr, ParseError> {
    match node.expr.kind() {
        Kind::Bool | Kind::Any => Ok(node.expr),
        Kind::Number => Err(ParseError::new(
            node.pos,
            "expected a condition, found a numeric expression (it can never be true or false)",
        )),
        Kind::String => Err(ParseError::new(
            node.pos,
            "expected a condition, found a string (it can never be true or false)",
        )),
    }
}

fn too_deep(pos: usize) -> ParseError {
    ParseError::new(
        pos,
        format!("the selector is nested too deeply (more than {MAX_DEPTH} levels)"),
    )
}

fn too_large(pos: usize, text: &str) -> ParseError {
    ParseError::new(
        pos,
        format!("integer literal '{text}' is too large for a 64-bit integer"),
    )
}
