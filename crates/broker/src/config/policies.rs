//! Per-destination policies: ActiveMQ's `policyEntry` (with its
//! `redeliveryPolicy` and dead-letter strategy) as `[[policies]]` entries.
//!
//! Each entry names its destinations by a pattern (`queue = "orders.>"` or
//! `topic = "prices.*"`, ActiveMQ's wildcards) and sets any of the keys of
//! [`PolicyEntry`]; a key it leaves unset is the `[destinations]` (or
//! `[limits]`) default, not another entry's value. Which entry a destination
//! gets when several match follows ActiveMQ's `DestinationMap.chooseValue`:
//! an entry naming exactly the destination (no wildcard) wins; otherwise the
//! matching entry whose pattern sorts first as text. That is ActiveMQ's
//! ordering, not "the most specific": `>` sorts before letters, so a `>`
//! entry beats `orders.>`, and `orders.*` (`*` sorts before `>`) beats
//! `orders.>`. Write patterns that do not overlap where that matters.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DestinationsConfig, LimitsConfig, SlowSubscriber};
use crate::model::{DestinationKind, NamePattern};

/// What happens to a message that cannot be delivered (too many
/// redeliveries, or expired when expired messages are dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterStrategy {
    /// A dead-letter queue per destination: `<dead-letter-prefix><name>`
    /// (ActiveMQ's `individualDeadLetterStrategy`).
    Individual,
    /// One dead-letter queue for all: `dead-letter-queue` (ActiveMQ's
    /// `sharedDeadLetterStrategy`, `ActiveMQ.DLQ`).
    Shared,
    /// Dropped, and counted (ActiveMQ's `discardingDeadLetterStrategy`).
    Discard,
}

/// One `[[policies]]` entry. Every key but the pattern is optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyEntry {
    /// The queues it is for (a name or a wildcard pattern).
    pub queue: Option<String>,
    /// The topics it is for (a name or a wildcard pattern).
    pub topic: Option<String>,
    /// See [`DestinationsConfig::max_redeliveries`].
    pub max_redeliveries: Option<u32>,
    /// See [`DestinationsConfig::initial_redelivery_delay`].
    pub initial_redelivery_delay: Option<u64>,
    /// See [`DestinationsConfig::redelivery_delay`].
    pub redelivery_delay: Option<u64>,
    /// See [`DestinationsConfig::use_exponential_backoff`].
    pub use_exponential_backoff: Option<bool>,
    /// See [`DestinationsConfig::backoff_multiplier`].
    pub backoff_multiplier: Option<f64>,
    /// See [`DestinationsConfig::maximum_redelivery_delay`].
    pub maximum_redelivery_delay: Option<i64>,
    /// See [`DestinationsConfig::dead_letter_strategy`].
    pub dead_letter_strategy: Option<DeadLetterStrategy>,
    /// See [`DestinationsConfig::dead_letter_queue`].
    pub dead_letter_queue: Option<String>,
    /// See [`DestinationsConfig::dead_letter_prefix`].
    pub dead_letter_prefix: Option<String>,
    /// See [`DestinationsConfig::dead_letter_expired`].
    pub dead_letter_expired: Option<bool>,
    /// See [`DestinationsConfig::dead_letter_non_persistent`].
    pub dead_letter_non_persistent: Option<bool>,
    /// Bytes of message bodies the destination keeps in memory (see
    /// `limits.destination-memory-bytes`).
    pub memory_bytes: Option<usize>,
    /// See [`DestinationsConfig::default_prefetch`].
    pub default_prefetch: Option<u32>,
    /// See [`DestinationsConfig::slow_subscriber`] (topics).
    pub slow_subscriber: Option<SlowSubscriber>,
    /// See [`DestinationsConfig::subscriber_pending_limit`] (topics).
    pub subscriber_pending_limit: Option<usize>,
    /// See [`DestinationsConfig::subscriber_backlog_bytes`] (topics).
    pub subscriber_backlog_bytes: Option<usize>,
    /// See [`DestinationsConfig::slow_subscriber_abort_ms`] (topics).
    pub slow_subscriber_abort_ms: Option<u64>,
}

/// When a message that went back goes out again: ActiveMQ's
/// `RedeliveryPolicy`, applied by the broker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Redelivery {
    /// Before the first redelivery, in ms.
    pub initial_ms: u64,
    /// Before each later one (the base of the backoff), in ms.
    pub delay_ms: u64,
    /// Whether each delay is the previous one times `multiplier`.
    pub backoff: bool,
    /// The backoff's factor (it applies only above 1, as in ActiveMQ).
    pub multiplier: f64,
    /// The longest a backed-off delay grows to, in ms; `None`: no bound.
    pub max_ms: Option<u64>,
}

/// Longest a redelivery is ever delayed: far beyond any sane policy, and
/// small enough that adding it to a clock never overflows.
const LONGEST_DELAY_MS: u64 = 365 * 24 * 3_600_000;

impl Redelivery {
    /// Redelivered at once, as before policies had delays.
    pub const IMMEDIATE: Redelivery = Redelivery {
        initial_ms: 0,
        delay_ms: 0,
        backoff: false,
        multiplier: 5.0,
        max_ms: None,
    };

    /// Whether every redelivery is immediate.
    pub fn is_immediate(&self) -> bool {
        self.initial_ms == 0 && self.delay_ms == 0
    }

    /// ActiveMQ's `RedeliveryPolicy.getNextRedeliveryDelay`: after a delay
    /// of `previous_ms` (0: none yet), the redelivery delay, or with
    /// backoff the previous delay times the multiplier, at most the
    /// maximum (but never below the redelivery delay).
    fn next_ms(&self, previous_ms: u64) -> u64 {
        if previous_ms > 0 && self.backoff && self.multiplier > 1.0 {
            // `as` saturates; the bound below keeps it sane.
            let next = (previous_ms as f64 * self.multiplier) as u64;
            return match self.max_ms {
                Some(max) if next > max => max.max(self.delay_ms),
                _ => next,
            }
            .min(LONGEST_DELAY_MS);
        }
        self.delay_ms.min(LONGEST_DELAY_MS)
    }

    /// The delay before redelivery number `n` (1: the first): the initial
    /// delay, then [`Redelivery::next_ms`] of the one before.
    pub fn delay(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let mut d = self.initial_ms.min(LONGEST_DELAY_MS);
        for _ in 1..n {
            let next = self.next_ms(d);
            if next == d {
                break; // A fixed point: capped, or no backoff.
            }
            d = next;
        }
        Duration::from_millis(d)
    }
}

/// Where a destination's dead messages go.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Which dead-letter strategy.
    pub strategy: DeadLetterStrategy,
    /// The shared dead-letter queue's name.
    pub queue: String,
    /// The individual dead-letter queues' prefix.
    pub prefix: String,
    /// Whether expired messages are dead-lettered (otherwise dropped).
    pub expired: bool,
    /// Whether non-persistent messages are dead-lettered (otherwise
    /// dropped).
    pub non_persistent: bool,
}

impl DeadLetter {
    /// The dead-letter queue's name for a message of destination `name`;
    /// `None` with the discard strategy. (The broker shortens an
    /// individual one that would be too long: `Destination::dead_letter`.)
    pub fn queue_for(&self, name: &str) -> Option<String> {
        match self.strategy {
            DeadLetterStrategy::Individual => Some(format!("{}{name}", self.prefix)),
            DeadLetterStrategy::Shared => Some(self.queue.clone()),
            DeadLetterStrategy::Discard => None,
        }
    }
}

/// The policy one destination gets: its entry's keys over the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationPolicy {
    /// Redeliveries before a message is dead-lettered.
    pub max_redeliveries: u32,
    /// Delays before redeliveries.
    pub redelivery: Redelivery,
    /// Dead-lettering.
    pub dead_letter: DeadLetter,
    /// Bytes of bodies kept in memory.
    pub memory_bytes: usize,
    /// Prefetch of subscriptions that ask for none.
    pub default_prefetch: u32,
    /// A topic subscriber that falls behind.
    pub slow_subscriber: SlowSubscriber,
    /// Its backlog bound.
    pub subscriber_pending_limit: usize,
    /// Its backlog bound in bytes.
    pub subscriber_backlog_bytes: usize,
    /// When it is disconnected, in ms (0: never).
    pub slow_subscriber_abort_ms: u64,
}

/// The `[[policies]]` entries, their patterns parsed, with the defaults:
/// answers which policy a destination gets.
#[derive(Debug, Clone)]
pub struct Policies {
    entries: Vec<(DestinationKind, NamePattern, PolicyEntry)>,
    default: DestinationPolicy,
}

/// The redelivery delay from the `[destinations]` keys.
fn redelivery_of(initial: u64, delay: u64, backoff: bool, multiplier: f64, max: i64) -> Redelivery {
    Redelivery {
        initial_ms: initial,
        delay_ms: delay,
        backoff,
        multiplier,
        max_ms: (max > 0).then_some(max as u64),
    }
}

impl Policies {
    /// Compiles the entries over the defaults. The configuration must have
    /// been validated ([`validate`]): an entry whose pattern does not parse
    /// is left out.
    pub fn new(entries: &[PolicyEntry], d: &DestinationsConfig, limits: &LimitsConfig) -> Policies {
        let default = DestinationPolicy {
            max_redeliveries: d.max_redeliveries,
            redelivery: redelivery_of(
                d.initial_redelivery_delay,
                d.redelivery_delay,
                d.use_exponential_backoff,
                d.backoff_multiplier,
                d.maximum_redelivery_delay,
            ),
            dead_letter: DeadLetter {
                strategy: d.dead_letter_strategy,
                queue: d.dead_letter_queue.clone(),
                prefix: d.dead_letter_prefix.clone(),
                expired: d.dead_letter_expired,
                non_persistent: d.dead_letter_non_persistent,
            },
            memory_bytes: limits.destination_memory_bytes,
            default_prefetch: d.default_prefetch,
            slow_subscriber: d.slow_subscriber,
            subscriber_pending_limit: d.subscriber_pending_limit,
            subscriber_backlog_bytes: d.subscriber_backlog_bytes,
            slow_subscriber_abort_ms: d.slow_subscriber_abort_ms,
        };
        let entries = entries
            .iter()
            .filter_map(|e| {
                let (kind, text) = target(e).ok()?;
                Some((kind, NamePattern::parse(text).ok()?, e.clone()))
            })
            .collect();
        Policies { entries, default }
    }

    /// The entry a destination of `kind` named `name` gets, if any
    /// (ActiveMQ's choice: see the module's documentation).
    fn entry_for(&self, kind: DestinationKind, name: &str) -> Option<&PolicyEntry> {
        let kind = base_kind(kind);
        let mut matching = self
            .entries
            .iter()
            .filter(|(k, p, _)| *k == kind && p.matches(name));
        let first = matching.next()?;
        let exact = |e: &&(DestinationKind, NamePattern, PolicyEntry)| e.1.as_str() == name;
        let mut best = first;
        if exact(&best) {
            return Some(&best.2);
        }
        for e in matching {
            if exact(&e) {
                return Some(&e.2);
            }
            if e.1.as_str() < best.1.as_str() {
                best = e;
            }
        }
        Some(&best.2)
    }

    /// The policy of a destination of `kind` named `name`.
    pub fn for_destination(&self, kind: DestinationKind, name: &str) -> DestinationPolicy {
        let d = &self.default;
        let Some(e) = self.entry_for(kind, name) else {
            return d.clone();
        };
        let r = &d.redelivery;
        DestinationPolicy {
            max_redeliveries: e.max_redeliveries.unwrap_or(d.max_redeliveries),
            redelivery: Redelivery {
                initial_ms: e.initial_redelivery_delay.unwrap_or(r.initial_ms),
                delay_ms: e.redelivery_delay.unwrap_or(r.delay_ms),
                backoff: e.use_exponential_backoff.unwrap_or(r.backoff),
                multiplier: e.backoff_multiplier.unwrap_or(r.multiplier),
                max_ms: match e.maximum_redelivery_delay {
                    Some(m) => (m > 0).then_some(m as u64),
                    None => r.max_ms,
                },
            },
            dead_letter: DeadLetter {
                strategy: e.dead_letter_strategy.unwrap_or(d.dead_letter.strategy),
                queue: e
                    .dead_letter_queue
                    .clone()
                    .unwrap_or_else(|| d.dead_letter.queue.clone()),
                prefix: e
                    .dead_letter_prefix
                    .clone()
                    .unwrap_or_else(|| d.dead_letter.prefix.clone()),
                expired: e.dead_letter_expired.unwrap_or(d.dead_letter.expired),
                non_persistent: e
                    .dead_letter_non_persistent
                    .unwrap_or(d.dead_letter.non_persistent),
            },
            memory_bytes: e.memory_bytes.unwrap_or(d.memory_bytes),
            default_prefetch: e.default_prefetch.unwrap_or(d.default_prefetch),
            slow_subscriber: e.slow_subscriber.unwrap_or(d.slow_subscriber),
            subscriber_pending_limit: e
                .subscriber_pending_limit
                .unwrap_or(d.subscriber_pending_limit),
            subscriber_backlog_bytes: e
                .subscriber_backlog_bytes
                .unwrap_or(d.subscriber_backlog_bytes),
            slow_subscriber_abort_ms: e
                .slow_subscriber_abort_ms
                .unwrap_or(d.slow_subscriber_abort_ms),
        }
    }

    /// Whether the queue `name` is a dead-letter queue of some policy (its
    /// messages are never dead-lettered again).
    pub fn is_dead_letter_queue(&self, name: &str) -> bool {
        let default = &self.default.dead_letter;
        let is = |queue: Option<&str>, prefix: Option<&str>| {
            queue.is_some_and(|q| q == name) || prefix.is_some_and(|p| name.starts_with(p))
        };
        is(Some(&default.queue), Some(&default.prefix))
            || self.entries.iter().any(|(_, _, e)| {
                is(
                    e.dead_letter_queue.as_deref(),
                    e.dead_letter_prefix.as_deref(),
                )
            })
    }
}

/// Temporary destinations follow the policies of their kind.
fn base_kind(kind: DestinationKind) -> DestinationKind {
    match kind {
        DestinationKind::TempQueue => DestinationKind::Queue,
        DestinationKind::TempTopic => DestinationKind::Topic,
        k => k,
    }
}

/// What an entry is for: exactly one of `queue` and `topic`.
fn target(e: &PolicyEntry) -> Result<(DestinationKind, &str), String> {
    match (&e.queue, &e.topic) {
        (Some(q), None) => Ok((DestinationKind::Queue, q)),
        (None, Some(t)) => Ok((DestinationKind::Topic, t)),
        (Some(_), Some(_)) => Err("sets both queue and topic; an entry is for one".into()),
        (None, None) => Err("sets neither queue nor topic: it must name its destinations".into()),
    }
}

/// A name a dead-letter queue can have.
fn queue_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !NamePattern::is_wildcard(name)
}

/// Checks the `[destinations]` redelivery keys and every entry.
pub(super) fn validate(d: &DestinationsConfig, entries: &[PolicyEntry]) -> Result<(), ConfigError> {
    if !(d.backoff_multiplier.is_finite() && d.backoff_multiplier >= 0.0) {
        return Err(ConfigError::Invalid {
            key: "destinations.backoff-multiplier",
            message: "must be a number of at least 0".into(),
        });
    }
    if !queue_name_ok(&d.dead_letter_queue) {
        return Err(ConfigError::Invalid {
            key: "destinations.dead-letter-queue",
            message: "must be a queue name: non-empty, no '/', no wildcard".into(),
        });
    }
    for (index, e) in entries.iter().enumerate() {
        let bad = |message: String| ConfigError::Policy { index, message };
        let (_, text) = target(e).map_err(bad)?;
        NamePattern::parse(text).map_err(|err| bad(format!("pattern {text:?}: {err}")))?;
        if let Some(m) = e.backoff_multiplier
            && !(m.is_finite() && m >= 0.0)
        {
            return Err(bad(format!(
                "backoff-multiplier {m} must be a number of at least 0"
            )));
        }
        if let Some(q) = &e.dead_letter_queue
            && !queue_name_ok(q)
        {
            return Err(bad(format!(
                "dead-letter-queue {q:?} must be a queue name: non-empty, no '/', no wildcard"
            )));
        }
        if let Some(p) = &e.dead_letter_prefix
            && (p.is_empty() || p.contains('/'))
        {
            return Err(bad(format!(
                "dead-letter-prefix {p:?} must be non-empty and contain no '/'"
            )));
        }
        if e.memory_bytes == Some(0) {
            return Err(bad("memory-bytes must be greater than 0".into()));
        }
        if e.subscriber_pending_limit == Some(0) {
            return Err(bad("subscriber-pending-limit must be greater than 0".into()));
        }
        if e.subscriber_backlog_bytes == Some(0) {
            return Err(bad("subscriber-backlog-bytes must be greater than 0".into()));
        }
        if e.default_prefetch == Some(0) {
            return Err(bad("default-prefetch must be greater than 0".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn config(text: &str) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_toml(text)
    }

    fn policies(text: &str) -> Policies {
        let c = config(text).unwrap();
        Policies::new(&c.policies, &c.destinations, &c.limits)
    }

    #[test]
    fn entries_parse_and_unset_keys_fall_back_to_the_defaults() {
        let p = policies(
            r#"
            [destinations]
            max-redeliveries = 4
            redelivery-delay = 50

            [[policies]]
            queue = "orders.>"
            max-redeliveries = 3
            initial-redelivery-delay = 1000
            use-exponential-backoff = true
            backoff-multiplier = 2.0
            maximum-redelivery-delay = 60000
            dead-letter-strategy = "shared"
            dead-letter-queue = "ActiveMQ.DLQ"
            dead-letter-expired = true
            dead-letter-non-persistent = false
            memory-bytes = 1048576
            default-prefetch = 100

            [[policies]]
            topic = "prices.*"
            slow-subscriber = "flow-control"
            subscriber-backlog-bytes = 65536
            "#,
        );
        let o = p.for_destination(DestinationKind::Queue, "orders.eu");
        assert_eq!(o.max_redeliveries, 3);
        assert_eq!(
            o.redelivery,
            Redelivery {
                initial_ms: 1000,
                delay_ms: 50,
                backoff: true,
                multiplier: 2.0,
                max_ms: Some(60_000),
            }
        );
        assert_eq!(
            o.dead_letter.queue_for("orders.eu").as_deref(),
            Some("ActiveMQ.DLQ")
        );
        assert!(o.dead_letter.expired && !o.dead_letter.non_persistent);
        assert_eq!((o.memory_bytes, o.default_prefetch), (1_048_576, 100));
        // A topic of the same name is not a queue.
        let t = p.for_destination(DestinationKind::Topic, "orders.eu");
        assert_eq!(t.max_redeliveries, 4);
        assert_eq!(t.redelivery.delay_ms, 50);
        assert_eq!(
            t.dead_letter.queue_for("orders.eu").as_deref(),
            Some("DLQ.orders.eu")
        );
        let prices = p.for_destination(DestinationKind::Topic, "prices.x");
        assert_eq!(prices.slow_subscriber, SlowSubscriber::FlowControl);
        assert_eq!(prices.subscriber_backlog_bytes, 65536);
        assert_eq!(t.subscriber_backlog_bytes, 1024 * 1024, "the default");
        // Temporary queues follow the queues' entries.
        let tmp = p.for_destination(DestinationKind::TempQueue, "orders.tmp");
        assert_eq!(tmp.max_redeliveries, 3);
        assert!(p.is_dead_letter_queue("ActiveMQ.DLQ"));
        assert!(p.is_dead_letter_queue("DLQ.orders.eu"));
        assert!(!p.is_dead_letter_queue("orders.eu"));
    }

    #[test]
    fn the_exact_entry_wins_then_the_first_pattern_in_text_order() {
        let p = policies(
            r#"
            [[policies]]
            queue = "a.>"
            max-redeliveries = 1
            [[policies]]
            queue = "a.*"
            max-redeliveries = 2
            [[policies]]
            queue = "a.b"
            max-redeliveries = 3
            [[policies]]
            queue = ">"
            max-redeliveries = 4
            "#,
        );
        let max = |n: &str| {
            p.for_destination(DestinationKind::Queue, n)
                .max_redeliveries
        };
        assert_eq!(max("a.b"), 3, "the exact entry");
        // ">" sorts before "a.*" and "a.>" (ActiveMQ's order).
        assert_eq!(max("a.c"), 4);
        assert_eq!(max("x"), 4);
        let p = policies(
            r#"
            [[policies]]
            queue = "a.>"
            max-redeliveries = 1
            [[policies]]
            queue = "a.*"
            max-redeliveries = 2
            "#,
        );
        let max = |n: &str| {
            p.for_destination(DestinationKind::Queue, n)
                .max_redeliveries
        };
        assert_eq!(max("a.c"), 2, "'*' sorts before '>'");
        assert_eq!(max("a.c.d"), 1);
        assert_eq!(max("b"), 6, "no entry: the default");
    }

    #[test]
    fn bad_entries_are_refused_with_a_clear_error() {
        for (text, wanted) in [
            (
                "[[policies]]\nmax-redeliveries = 1",
                "neither queue nor topic",
            ),
            (
                "[[policies]]\nqueue = \"a\"\ntopic = \"b\"",
                "both queue and topic",
            ),
            (
                "[[policies]]\nqueue = \"a.>.b\"",
                "'>' may only be the last",
            ),
            ("[[policies]]\nqueue = \"\"", "empty"),
            (
                "[[policies]]\nqueue = \"a\"\nbackoff-multiplier = -2.0",
                "backoff-multiplier",
            ),
            (
                "[[policies]]\nqueue = \"a\"\nredelivery-dela = 5",
                "unknown field",
            ),
            (
                "[[policies]]\nqueue = \"a\"\ndead-letter-strategy = \"bin\"",
                "unknown variant",
            ),
            (
                "[[policies]]\nqueue = \"a\"\ndead-letter-queue = \"DLQ.>\"",
                "dead-letter-queue",
            ),
            (
                "[destinations]\nbackoff-multiplier = -1.0",
                "backoff-multiplier",
            ),
        ] {
            let e = config(text).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
        let e = config("[[policies]]\nqueue = \"a\"\n[[policies]]\ntopic = \"b.>.c\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("policies[1]"), "{e}");
    }

    #[test]
    fn delays_follow_activemq_redelivery_policy() {
        let r = Redelivery {
            initial_ms: 200,
            delay_ms: 200,
            backoff: true,
            multiplier: 2.0,
            max_ms: Some(1000),
        };
        let ms: Vec<u128> = (0..7).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(ms, vec![0, 200, 400, 800, 1000, 1000, 1000]);
        // Without backoff: the initial delay, then the redelivery delay.
        let r = Redelivery {
            backoff: false,
            initial_ms: 0,
            delay_ms: 300,
            ..r
        };
        let ms: Vec<u128> = (1..4).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(ms, vec![0, 300, 300]);
        // A multiplier of 1 or less does not back off; no maximum grows
        // without bound but stays sane.
        let r = Redelivery {
            backoff: true,
            initial_ms: 100,
            delay_ms: 100,
            multiplier: 5.0,
            max_ms: None,
        };
        assert_eq!(r.delay(3).as_millis(), 2500);
        assert_eq!(r.delay(u32::MAX).as_millis(), u128::from(LONGEST_DELAY_MS));
        assert!(Redelivery::IMMEDIATE.is_immediate());
        assert_eq!(Redelivery::IMMEDIATE.delay(5), Duration::ZERO);
    }

    #[test]
    fn the_destinations_redelivery_keys_come_from_the_environment_too() {
        let c = BrokerConfig::load(
            None,
            [
                (
                    "HALYARD_DESTINATIONS__REDELIVERY_DELAY".to_owned(),
                    "250".to_owned(),
                ),
                (
                    "HALYARD_DESTINATIONS__DEAD_LETTER_STRATEGY".to_owned(),
                    "shared".to_owned(),
                ),
                (
                    "HALYARD_DESTINATIONS__BACKOFF_MULTIPLIER".to_owned(),
                    "3.5".to_owned(),
                ),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.destinations.redelivery_delay, 250);
        assert_eq!(
            c.destinations.dead_letter_strategy,
            DeadLetterStrategy::Shared
        );
        assert_eq!(c.destinations.backoff_multiplier, 3.5);
    }
}
