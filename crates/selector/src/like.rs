//! `LIKE` patterns: compiled once to a token list and matched on chars with
//! the two-pointer wildcard algorithm (remember the last `%`, retry from one
//! char further on a mismatch). Worst case O(pattern × value), never the
//! exponential blow-up a backtracking regex can hit on `%a%a%a%…b`.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// This exact char.
    Lit(char),
    /// `_`: any one char.
    One,
    /// `%`: any sequence of chars, empty included.
    Many,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    pieces: Box<[Piece]>,
}

impl Pattern {
    /// Compiles `pattern`. As ActiveMQ does, the escape char makes the next
    /// char literal only when that is `%`, `_` or the escape char itself;
    /// anywhere else (or at the end) it stands for itself.
    pub(crate) fn new(pattern: &str, escape: Option<char>) -> Pattern {
        let mut pieces = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if Some(c) == escape
                && let Some(&next) = chars.peek()
                && (next == '%' || next == '_' || Some(next) == escape)
            {
                chars.next();
                pieces.push(Piece::Lit(next));
                continue;
            }
            match c {
                '%' => {
                    if pieces.last() != Some(&Piece::Many) {
                        pieces.push(Piece::Many);
                    }
                }
                '_' => pieces.push(Piece::One),
                c => pieces.push(Piece::Lit(c)),
            }
        }
        Pattern {
            pieces: pieces.into_boxed_slice(),
        }
    }

    /// Whether the whole of `value` matches.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let pat = &self.pieces;
        let (mut p, mut i) = (0usize, 0usize);
        // After the last `%` seen: (pattern index after it, value byte index it
        // currently swallows up to).
        let mut retry: Option<(usize, usize)> = None;
        loop {
            if let Some(piece) = pat.get(p) {
                let next = value[i..].chars().next();
                match (piece, next) {
                    (Piece::Many, _) => {
                        p += 1;
                        retry = Some((p, i));
                        continue;
                    }
                    (Piece::One, Some(c)) => {
                        p += 1;
                        i += c.len_utf8();
                        continue;
                    }
                    (Piece::Lit(want), Some(c)) if *want == c => {
                        p += 1;
                        i += c.len_utf8();
                        continue;
                    }
                    _ => {}
                }
            } else if i == value.len() {
                return true;
            }
            // Mismatch: let the last `%` swallow one more char, or fail.
            let Some((rp, ri)) = retry else {
                return false;
            };
            let Some(c) = value[ri..].chars().next() else {
                return false;
            };
            let ri = ri + c.len_utf8();
            retry = Some((rp, ri));
            p = rp;
            i = ri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, v: &str) -> bool {
        Pattern::new(p, Some('\\')).matches(v)
    }

    #[test]
    fn basics() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abcd"));
        assert!(m("a%", "abcd"));
        assert!(m("%d", "abcd"));
        assert!(m("%", ""));
        assert!(!m("_", ""));
        assert!(m("_é_", "aéb"));
        assert!(m("a%b%c", "axxbyyc"));
        assert!(!m("a%b%c", "axxbyy"));
        assert!(m("\\%%", "%x"));
        assert!(!m("\\%%", "x%"));
        assert!(m("a\\b", "a\\b"));
        assert!(m("%a_", "bab"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = "%a".repeat(200) + "b";
        let value = "a".repeat(5000);
        let started = std::time::Instant::now();
        assert!(!m(&pattern, &value));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
