//! A message's application properties.

use std::fmt;
use std::sync::Arc;

use super::Value;

/// Named [`Value`]s in the order the producer gave them, each name once.
///
/// Built once, when the message is made, and never changed: a message's
/// copies (a dead letter, a durable subscription's stored copy, a body read
/// back from the store) share them, so cloning is a reference count. The
/// list is moved into its `Arc` as it was built, without a copy; an empty
/// one allocates nothing.
///
/// When a name comes more than once, the first value is kept and the later
/// ones dropped: STOMP's rule for repeated headers, and harmless for
/// protocols whose properties are maps anyway.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(Option<Arc<Vec<(String, Value)>>>);

/// Up to this many properties, duplicates are found by comparing each name
/// with the ones before it; beyond, by sorting (no quadratic cost for a
/// peer that sends thousands).
const SCAN_UP_TO: usize = 16;

impl Properties {
    /// No properties.
    pub fn new() -> Properties {
        Properties(None)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The properties in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.as_slice().iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_slice()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The value called `name` if it is a string (a STOMP header, an id
    /// the broker reads, such as the duplicate-detection id).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Approximate memory held, for the memory budget.
    pub fn weight(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.weight() + 16).sum()
    }

    fn as_slice(&self) -> &[(String, Value)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// Keeps the first property of each name.
impl From<Vec<(String, Value)>> for Properties {
    fn from(mut list: Vec<(String, Value)>) -> Properties {
        if list.is_empty() {
            return Properties(None);
        }
        first_of_each_name(&mut list);
        // A list collected from a filtered iterator (a SEND's headers less
        // the STOMP ones) starts at 4 slots of 56 bytes whatever it holds;
        // a message may stay in memory for hours (scheduled, queued), and
        // the spare slots are not in its weight.
        list.shrink_to_fit();
        Properties(Some(Arc::new(list)))
    }
}

/// Keeps the first property of each name.
impl FromIterator<(String, Value)> for Properties {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Properties {
        Properties::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Removes every property whose name an earlier one has, keeping order.
/// Cheap and allocation-free when there is nothing to remove: the common
/// case (every message read back from a store, most sends).
fn first_of_each_name(list: &mut Vec<(String, Value)>) {
    // Names with different bits differ: most lists are told free of
    // repeats by this alone, without comparing any two names.
    let bit = |k: &str| 1u64 << ((k.len() + usize::from(k.bytes().last().unwrap_or(0))) % 64);
    let mut seen = 0u64;
    if list.iter().all(|(k, _)| {
        let b = bit(k);
        let new = seen & b == 0;
        seen |= b;
        new
    }) {
        return;
    }
    let n = list.len();
    let dropped: Vec<bool> = if n <= SCAN_UP_TO {
        let repeats = |i: usize| list[..i].iter().any(|(k, _)| *k == list[i].0);
        if !(1..n).any(repeats) {
            return;
        }
        (0..n).map(repeats).collect()
    } else {
        // Sorted by name and then position, the later ones of a name
        // follow the first.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| list[a].0.cmp(&list[b].0).then(a.cmp(&b)));
        let mut dropped = vec![false; n];
        for pair in order.windows(2) {
            if list[pair[0]].0 == list[pair[1]].0 {
                dropped[pair[1]] = true;
            }
        }
        dropped
    };
    let mut at = 0;
    list.retain(|_| {
        at += 1;
        !dropped[at - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect()
    }

    fn names(p: &Properties) -> Vec<&str> {
        p.iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn order_is_kept_and_the_first_of_a_name_wins() {
        let p = props(&[("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("a", "5")]);
        assert_eq!(names(&p), vec!["b", "a", "c"]);
        // Different names that look alike to the quick check are kept.
        assert_eq!(names(&props(&[("ab", "1"), ("bb", "2")])), vec!["ab", "bb"]);
        assert_eq!(p.get_str("b"), Some("1"));
        assert_eq!(p.get_str("a"), Some("2"));
        assert_eq!(p.get("z"), None);
        assert_eq!(p.len(), 3);
        // Many names: the same rule, without comparing every pair.
        let many: Vec<(String, Value)> = (0..1000)
            .map(|i| (format!("k{}", (i * 7) % 400), Value::I32(i)))
            .collect();
        let p = Properties::from(many);
        assert_eq!(p.len(), 400);
        let firsts: Vec<(String, i32)> = (0..400)
            .map(|i| (format!("k{}", (i * 7) % 400), i))
            .collect();
        let got: Vec<(String, i32)> = p
            .iter()
            .map(|(k, v)| match v {
                Value::I32(n) => (k.to_owned(), *n),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, firsts);
    }

    #[test]
    fn a_list_collected_through_a_filter_keeps_no_spare_slots() {
        let p: Properties = [("a", "1"), ("skip", ""), ("b", "2")]
            .iter()
            .filter(|(k, _)| *k != "skip")
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let list = p.0.as_ref().map(|l| (l.len(), l.capacity()));
        assert_eq!(list, Some((2, 2)));
    }

    #[test]
    fn empty_lists_are_all_alike_and_clones_share() {
        assert!(Properties::new().is_empty());
        assert_eq!(Properties::from(vec![]), Properties::new());
        assert_eq!(props(&[]), Properties::default());
        assert_eq!(Properties::new().weight(), 0);
        let p = props(&[("k", "v")]);
        let q = p.clone();
        assert!(matches!((&p.0, &q.0), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
        assert_eq!(p.weight(), 1 + 1 + 16);
        assert_eq!(format!("{p:?}"), r#"{"k": String("v")}"#);
        // Only strings are strings.
        let typed: Properties = [("n".to_owned(), Value::I64(1))].into_iter().collect();
        assert_eq!(typed.get_str("n"), None);
        assert_eq!(typed.get("n"), Some(&Value::I64(1)));
    }
}
