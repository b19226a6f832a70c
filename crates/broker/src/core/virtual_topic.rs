//! Virtual topics (ActiveMQ's): a topic whose messages are also enqueued
//! into queues, one per group of consumers, so that each group
//! load-balances its own copy of the topic.
//!
//! With the defaults, topic `VirtualTopic.Orders` is virtual (it matches
//! `destinations.virtual-topics`, `VirtualTopic.>`), and queue
//! `Consumer.A.VirtualTopic.Orders` is group A's consumer queue of it (its
//! name is `destinations.virtual-topic-consumers`, `Consumer.*.`, followed
//! by the topic's name).
//!
//! The rule, as ActiveMQ's: a consumer queue receives a copy of every
//! message whose SEND the broker takes after the queue was made — by the
//! first consumer that subscribes to it, or the first message sent to it —
//! and nothing sent before. Each message is routed once, when its SEND is
//! taken, against the consumer queues of that moment, so a queue made
//! while messages flow gets each of them once or not at all. Consumer
//! queues are never reclaimed when idle, and the store remembers them, so
//! they keep receiving across restarts and takeovers while their consumers
//! are away.

use crate::config::DestinationsConfig;
use crate::model::{NamePattern, SEPARATOR};

/// Which topics are virtual and how their consumer queues are named.
#[derive(Debug, Clone)]
pub(crate) struct VirtualTopics {
    /// `None`: no virtual topics.
    topics: Option<NamePattern>,
    /// The consumer-queue prefix, without its last `.`.
    consumers: Option<NamePattern>,
}

impl VirtualTopics {
    /// As configured (the configuration was validated at start).
    pub(crate) fn new(config: &DestinationsConfig) -> VirtualTopics {
        let topics = (!config.virtual_topics.is_empty())
            .then(|| NamePattern::parse(&config.virtual_topics).ok())
            .flatten();
        let consumers = NamePattern::parse(
            config
                .virtual_topic_consumers
                .strip_suffix(SEPARATOR)
                .unwrap_or(&config.virtual_topic_consumers),
        )
        .ok();
        VirtualTopics { topics, consumers }
    }

    /// The virtual topic whose consumer queue `queue` is, if it is one.
    pub(crate) fn topic_of<'a>(&self, queue: &'a str) -> Option<&'a str> {
        let (topics, consumers) = (self.topics.as_ref()?, self.consumers.as_ref()?);
        let n = consumers.fixed_len();
        let split = queue
            .match_indices(SEPARATOR)
            .nth(n.checked_sub(1)?)
            .map(|(i, _)| i)?;
        let (prefix, topic) = (&queue[..split], &queue[split + 1..]);
        (consumers.matches(prefix) && !topic.is_empty() && topics.matches(topic)).then_some(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_topic_of_a_consumer_queue() {
        let v = VirtualTopics::new(&DestinationsConfig::default());
        assert_eq!(
            v.topic_of("Consumer.A.VirtualTopic.Orders"),
            Some("VirtualTopic.Orders")
        );
        assert_eq!(
            v.topic_of("Consumer.A.VirtualTopic.a.b"),
            Some("VirtualTopic.a.b")
        );
        assert_eq!(v.topic_of("Consumer.A.Orders"), None);
        assert_eq!(v.topic_of("Consumer.VirtualTopic.Orders"), None);
        assert_eq!(v.topic_of("Other.A.VirtualTopic.Orders"), None);
        assert_eq!(v.topic_of("Consumer"), None);
        let off = VirtualTopics::new(&DestinationsConfig {
            virtual_topics: String::new(),
            ..DestinationsConfig::default()
        });
        assert_eq!(off.topic_of("Consumer.A.VirtualTopic.Orders"), None);
        let custom = VirtualTopics::new(&DestinationsConfig {
            virtual_topics: "VT.*".into(),
            virtual_topic_consumers: "Group.*.in.".into(),
            ..DestinationsConfig::default()
        });
        assert_eq!(custom.topic_of("Group.x.in.VT.a"), Some("VT.a"));
        assert_eq!(custom.topic_of("Group.x.VT.a"), None);
    }
}
