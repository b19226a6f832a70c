//! ActiveMQ's wildcards over destination names.
//!
//! A name is a path of elements separated by `.`. In a pattern, an element
//! `*` matches any one element, and a last element `>` matches the rest of
//! the path — at least nothing: `A.>` matches `A`, `A.b` and `A.b.c`, as in
//! ActiveMQ Classic (its `PrefixDestinationFilter`). Only whole elements are
//! wildcards: `a*b` is an ordinary name. A `>` anywhere but at the end is
//! refused, because ActiveMQ silently treats such a name as a literal, which
//! is never what was meant.

use std::fmt;

/// The separator between a name's elements.
pub const SEPARATOR: char = '.';
/// The element matching any one element.
pub const ANY_ONE: &str = "*";
/// The last element matching the rest of the path.
pub const ANY_REST: &str = ">";

/// A destination name with wildcards in it, ready to match names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern {
    text: String,
    /// The elements before any trailing `>`.
    elements: Vec<Element>,
    /// Whether the pattern ends with `>`.
    rest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Element {
    Literal(String),
    AnyOne,
}

/// A pattern the broker cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// `>` stands somewhere other than last.
    #[error("invalid wildcard '{0}': '>' may only be the last element")]
    RestNotLast(String),
    /// The pattern is empty.
    #[error("an empty destination name is not a pattern")]
    Empty,
}

impl NamePattern {
    /// Whether `name` has a wildcard element (`*`, or `>`), so that it names
    /// a set of destinations rather than one.
    pub fn is_wildcard(name: &str) -> bool {
        name.split(SEPARATOR).any(|e| e == ANY_ONE || e == ANY_REST)
    }

    /// Parses a pattern (a name without wildcards is a pattern matching
    /// itself).
    pub fn parse(text: &str) -> Result<NamePattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let parts: Vec<&str> = text.split(SEPARATOR).collect();
        // Several trailing `>` are one (ActiveMQ collapses them too).
        let mut end = parts.len();
        while end > 0 && parts[end - 1] == ANY_REST {
            end -= 1;
        }
        let rest = end < parts.len();
        let mut elements = Vec::with_capacity(end);
        for p in &parts[..end] {
            elements.push(match *p {
                ANY_REST => return Err(PatternError::RestNotLast(text.to_owned())),
                ANY_ONE => Element::AnyOne,
                lit => Element::Literal(lit.to_owned()),
            });
        }
        Ok(NamePattern {
            text: text.to_owned(),
            elements,
            rest,
        })
    }

    /// Whether `name` is one of the names this pattern stands for.
    pub fn matches(&self, name: &str) -> bool {
        let mut path = name.split(SEPARATOR);
        for e in &self.elements {
            match (e, path.next()) {
                (_, None) => return false,
                (Element::AnyOne, Some(_)) => {}
                (Element::Literal(l), Some(p)) => {
                    if l != p {
                        return false;
                    }
                }
            }
        }
        self.rest || path.next().is_none()
    }

    /// How many leading elements a name matching this pattern has before
    /// whatever `>` matched (the elements the pattern spells out).
    pub fn fixed_len(&self) -> usize {
        self.elements.len()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, n: &str) -> bool {
        NamePattern::parse(p).unwrap().matches(n)
    }

    /// ActiveMQ 5.17's answers (its DestinationFilter classes).
    #[test]
    fn matches_as_activemq_does() {
        assert!(m("A.>", "A"));
        assert!(m("A.>", "A.b"));
        assert!(m("A.>", "A.b.c"));
        assert!(!m("A.>", "B.a"));
        assert!(!m("A.>", "AB"));
        assert!(m(">", "anything.at.all"));
        assert!(m("A.*", "A.b"));
        assert!(!m("A.*", "A"));
        assert!(!m("A.*", "A.b.c"));
        assert!(m("A.*.c", "A.b.c"));
        assert!(!m("A.*.c", "A.b.d"));
        assert!(m("A.*.>", "A.b"));
        assert!(m("A.*.>", "A.b.c.d"));
        assert!(!m("A.*.>", "A"));
        assert!(m("A.>.>", "A"));
        assert!(m("a*b", "a*b") && !m("a*b", "axb"));
        assert!(m("plain", "plain") && !m("plain", "plain.x"));
    }

    #[test]
    fn refuses_rest_before_the_end() {
        assert_eq!(
            NamePattern::parse("A.>.b"),
            Err(PatternError::RestNotLast("A.>.b".into()))
        );
        assert_eq!(NamePattern::parse(""), Err(PatternError::Empty));
    }

    #[test]
    fn knows_wildcards() {
        assert!(NamePattern::is_wildcard("A.*"));
        assert!(NamePattern::is_wildcard(">"));
        assert!(NamePattern::is_wildcard("a.>.b"));
        assert!(!NamePattern::is_wildcard("a*b.c>"));
        assert!(!NamePattern::is_wildcard("orders"));
    }

    /// The matcher against a reference written the other way round: as a
    /// regular language over the elements.
    fn reference(pattern: &str, name: &str) -> bool {
        let mut p: Vec<&str> = pattern.split('.').collect();
        let n: Vec<&str> = name.split('.').collect();
        let rest = p.last() == Some(&">");
        while p.last() == Some(&">") {
            p.pop();
        }
        if rest {
            n.len() >= p.len() && p.iter().zip(&n).all(|(a, b)| *a == "*" || a == b)
        } else {
            n.len() == p.len() && p.iter().zip(&n).all(|(a, b)| *a == "*" || a == b)
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(
            p in proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_owned())], 1..5),
            rest in any::<bool>(),
            n in proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..6),
        ) {
            let mut pattern = p.join(".");
            if rest { pattern.push_str(".>"); }
            let name = n.join(".");
            prop_assert_eq!(m(&pattern, &name), reference(&pattern, &name));
        }
    }
}
