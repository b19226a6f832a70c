//! Dispatch to consumers with a message selector.
//!
//! A selective consumer may want a message deep in a queue that nobody
//! else takes. Walking the queue from its head for every dispatch would
//! cost the depth of the queue per message, so each selective consumer
//! keeps a cursor per priority: everything ready before it has been judged
//! not for the consumer, and its next scan resumes there. Each entry is
//! therefore judged once per consumer, however deep the queue. Only an
//! entry put back before a cursor (a redelivery), or a change in who may
//! take what (a consumer leaves, a group closes), moves cursors back.
//!
//! Selective consumers are served before the head pass, round-robin among
//! those of one consumer priority, highest priority first, one message per
//! turn. The head pass serves consumers without a selector.
//!
//! Bodies paged out to disk cannot be judged: a scan stops at one, and
//! [`Dispatcher::selective_loads`] asks for the bodies ahead of each
//! selective consumer's cursor. When every consumer is selective and the
//! memory limit is reached, the bodies of stored entries that every
//! consumer has already judged are dropped again to make room.

use super::{Dispatcher, Effect, LOAD_AHEAD, drop_stored_bodies};

impl Dispatcher {
    /// An entry of priority `p` went (back) into the ready list at
    /// `arrival`: selective consumers have not judged it yet.
    pub(super) fn rewind(&mut self, p: usize, arrival: u64) {
        if self.selective == 0 {
            return;
        }
        self.judged_dropped[p] = self.judged_dropped[p].min(arrival);
        for c in &mut self.consumers {
            c.cursor[p] = c.cursor[p].min(arrival);
        }
    }

    /// Every selective consumer judges every ready entry again.
    pub(super) fn rewind_all(&mut self) {
        if self.selective == 0 {
            return;
        }
        for c in &mut self.consumers {
            c.cursor = [0; 10];
        }
        self.judged_dropped = [0; 10];
    }

    /// Serves the selective consumers with credit (see the module doc).
    pub(super) fn dispatch_selective(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        let n = self.consumers.len();
        let mut a = 0;
        while a < n {
            let priority = self.consumers[a].reg.priority;
            let len = self.consumers[a..]
                .iter()
                .take_while(|c| c.reg.priority == priority)
                .count();
            loop {
                let mut delivered = false;
                for ci in a..a + len {
                    let c = &self.consumers[ci];
                    if c.reg.selector.is_none()
                        || c.credit() == 0
                        || self.exclusive_owner.is_some_and(|o| o != c.reg.id)
                    {
                        continue;
                    }
                    let Some((p, arrival, assigns)) = self.scan(ci, now_ms) else {
                        continue;
                    };
                    let group = self.ready[p].get(&arrival).and_then(|e| e.group);
                    delivered |= self.deliver(p, arrival, ci, group, assigns, effects);
                }
                if !delivered {
                    break;
                }
            }
            a += len;
        }
    }

    /// The next ready entry for selective consumer `ci` at or after its
    /// cursors, as (priority, arrival, whether delivering it assigns its
    /// group), moving the cursors past what it judged not for it. `None`
    /// if there is none, or if the scan reached a body that is on disk.
    fn scan(&mut self, ci: usize, now_ms: u64) -> Option<(usize, u64, bool)> {
        let consumer = &mut self.consumers[ci];
        let id = consumer.reg.id;
        let selector = consumer.reg.selector.clone()?;
        for p in (0..10).rev() {
            let from = consumer.cursor[p];
            for (&arrival, e) in self.ready[p].range(from..) {
                if e.is_expired(now_ms) {
                    // Swept soon; never for anyone.
                    consumer.cursor[p] = arrival + 1;
                    continue;
                }
                let Some(message) = &e.message else {
                    consumer.cursor[p] = arrival;
                    return None;
                };
                let owner = match (&self.groups, e.group) {
                    (Some(groups), Some(member)) if !member.starts() => {
                        groups.peek_owner(member.key)
                    }
                    _ => None,
                };
                if consumer.refuses(e.origin)
                    || owner.is_some_and(|o| o != id)
                    || !selector.selects(message, e.deliveries)
                {
                    consumer.cursor[p] = arrival + 1;
                    continue;
                }
                consumer.cursor[p] = arrival;
                let assigns = e.group.is_some() && self.groups.is_some() && owner.is_none();
                return Some((p, arrival, assigns));
            }
            consumer.cursor[p] = self.next_arrival;
        }
        None
    }

    /// Bodies on disk just ahead of the selective consumers' cursors, as
    /// (seq, priority, weight, arrival), at most `limit`; `seen` skips
    /// those already wanted.
    pub(super) fn selective_loads(&self, limit: usize) -> Vec<(u64, u8, u32, u64)> {
        let mut want = Vec::new();
        for c in &self.consumers {
            if c.reg.selector.is_none() || c.credit() == 0 {
                continue;
            }
            let mut seen = 0;
            'consumer: for p in (0..10).rev() {
                for e in self.ready[p].range(c.cursor[p]..).map(|(_, e)| e) {
                    if seen >= LOAD_AHEAD || want.len() >= limit {
                        break 'consumer;
                    }
                    seen += 1;
                    if e.message.is_none()
                        && !self.loading.contains_key(&e.seq)
                        && !want.iter().any(|w: &(u64, u8, u32, u64)| w.0 == e.seq)
                    {
                        want.push((e.seq, e.priority, e.weight, e.arrival));
                    }
                }
            }
        }
        want
    }

    /// Makes room for `bytes` of bodies to be read back by dropping the
    /// bodies of stored entries that every consumer has judged not for it
    /// (only when every consumer is selective: otherwise the head pass
    /// will deliver those entries). Returns the bytes freed.
    pub(super) fn drop_judged_bodies(&mut self, bytes: usize) -> usize {
        if self.selective == 0 || self.selective != self.consumers.len() || !self.policy.pages {
            return 0;
        }
        let mut freed = 0;
        for p in 0..10 {
            let judged = self
                .consumers
                .iter()
                .map(|c| c.cursor[p])
                .min()
                .unwrap_or(0);
            let from = self.judged_dropped[p];
            if from >= judged {
                continue;
            }
            let mut last = from;
            let judged = self.ready[p].range_mut(from..judged).map(|(&arrival, e)| {
                last = arrival + 1;
                e
            });
            freed += drop_stored_bodies(judged, bytes - freed);
            self.judged_dropped[p] = last;
            if freed >= bytes {
                break;
            }
        }
        self.paged_in -= freed;
        freed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc;

    use super::super::{ConsumerId, ConsumerReg, Delivery, Dispatcher, Policy, Select};
    use crate::model::{Message, test_message as msg};

    /// Selects messages whose seq is `r` modulo `m`, counting evaluations.
    #[derive(Debug)]
    struct Modulo {
        m: u64,
        r: u64,
        judged: AtomicUsize,
    }

    impl Select for Modulo {
        fn selects(&self, message: &Message, _deliveries: u32) -> bool {
            self.judged.fetch_add(1, Ordering::Relaxed);
            message.seq % self.m == self.r
        }

        fn text(&self) -> &str {
            "seq % m = r"
        }
    }

    fn policy() -> Policy {
        Policy {
            max_redeliveries: 5,
            is_dead_letter_queue: false,
            memory_limit: usize::MAX,
            pages: false,
            pending_limit: None,
            backlog_limit: usize::MAX,
            abort_after: None,
            groups: None,
            redelivery: super::super::Redelivery::IMMEDIATE,
        }
    }

    fn consumer(
        d: &mut Dispatcher,
        id: u64,
        prefetch: u32,
        selector: Option<Arc<Modulo>>,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        d.add_consumer(ConsumerReg {
            selector: selector.map(|s| s as Arc<dyn Select>),
            ..ConsumerReg::plain(id, prefetch, tx)
        });
        rx
    }

    fn modulo(m: u64, r: u64) -> Arc<Modulo> {
        Arc::new(Modulo {
            m,
            r,
            judged: AtomicUsize::new(0),
        })
    }

    fn seqs(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Vec<u64> {
        let mut v = Vec::new();
        while let Ok(d) = rx.try_recv() {
            v.push(d.message.seq);
        }
        v
    }

    #[test]
    fn each_consumer_gets_only_what_it_selects_and_the_rest_stays() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 100, Some(modulo(3, 0)));
        let mut b = consumer(&mut d, 2, 100, Some(modulo(3, 1)));
        for seq in 1..=9 {
            d.push(msg(seq, 4), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(seqs(&mut a), vec![3, 6, 9]);
        assert_eq!(seqs(&mut b), vec![1, 4, 7]);
        assert_eq!(d.stats().ready, 3, "2, 5 and 8 wait for a consumer");
        // A consumer without a selector takes what is left.
        let mut c = consumer(&mut d, 3, 100, None);
        d.dispatch(0, &mut fx);
        assert_eq!(seqs(&mut c), vec![2, 5, 8]);
        assert!(fx.is_empty());
    }

    #[test]
    fn a_match_deep_in_the_queue_is_found_without_rescanning() {
        let mut d = Dispatcher::new(policy());
        for seq in 1..=10_000 {
            d.push(msg(seq, 4), true);
        }
        let sel = modulo(10_000, 0);
        let mut a = consumer(&mut d, 1, 1, Some(sel.clone()));
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(seqs(&mut a), vec![10_000]);
        // Many more dispatches (each new message, each ack) judge only
        // what is new.
        for seq in 10_001..=20_000 {
            d.ack(ConsumerId(1), &[seq - 1]);
            d.push(msg(seq, 4), true);
            d.dispatch(0, &mut fx);
        }
        assert_eq!(seqs(&mut a), vec![20_000]);
        let judged = sel.judged.load(Ordering::Relaxed);
        assert!(
            judged <= 20_000,
            "judged {judged} times for 20,000 messages"
        );
        assert_eq!(d.stats().ready, 19_998);
    }

    #[test]
    fn a_rejected_message_is_judged_again_in_its_place() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 10, Some(modulo(2, 0)));
        for seq in 1..=6 {
            d.push(msg(seq, 4), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(seqs(&mut a), vec![2, 4, 6]);
        d.nack(ConsumerId(1), &[4], false, &mut fx);
        d.dispatch(0, &mut fx);
        let again: Vec<(u64, u32)> = std::iter::from_fn(|| a.try_recv().ok())
            .map(|d| (d.message.seq, d.deliveries))
            .collect();
        assert_eq!(again, vec![(4, 2)]);
    }

    #[test]
    fn higher_message_priority_first_and_round_robin_among_equals() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 100, Some(modulo(1, 0)));
        let mut b = consumer(&mut d, 2, 100, Some(modulo(1, 0)));
        for (seq, p) in [(1, 4), (2, 9), (3, 4), (4, 9)] {
            d.push(msg(seq, p), true);
        }
        let mut fx = Vec::new();
        d.dispatch(0, &mut fx);
        assert_eq!(seqs(&mut a), vec![2, 1]);
        assert_eq!(seqs(&mut b), vec![4, 3]);
    }

    #[test]
    fn a_consumer_leaving_lets_the_others_judge_its_messages() {
        let mut d = Dispatcher::new(policy());
        let mut a = consumer(&mut d, 1, 100, Some(modulo(2, 0)));
        let mut b = consumer(&mut d, 2, 100, Some(modulo(1, 0)));
        for seq in 1..=4 {
            d.push(msg(seq, 4), true);
        }
        let mut fx = Vec::new();
        // Only a has credit at first.
        d.dispatch(0, &mut fx);
        let (x, y) = (seqs(&mut a), seqs(&mut b));
        assert_eq!(x.len() + y.len(), 4);
        d.remove_consumer(ConsumerId(1), &mut fx);
        d.dispatch(0, &mut fx);
        let mut back = seqs(&mut b);
        back.sort_unstable();
        assert_eq!(back, x, "b takes what a held");
    }

    #[test]
    fn bodies_on_disk_are_read_ahead_of_the_cursor_and_judged_ones_dropped() {
        let weight = msg(1, 4).weight();
        let mut d = Dispatcher::new(Policy {
            memory_limit: weight * 4,
            pages: true,
            ..policy()
        });
        for seq in 1..=100 {
            d.push(msg(seq, 4), true);
        }
        assert_eq!(d.stats().memory_bytes, weight * 4, "4 resident, 96 on disk");
        let mut a = consumer(&mut d, 1, 10, Some(modulo(100, 0)));
        let mut fx = Vec::new();
        let mut rounds = 0;
        while seqs(&mut a).is_empty() {
            rounds += 1;
            assert!(rounds < 200, "the selective consumer never got message 100");
            d.dispatch(0, &mut fx);
            let wanted = d.wanted_loads();
            let bodies = wanted.iter().map(|&s| (s, Ok(msg(s, 4)))).collect();
            d.loaded(bodies, &mut fx);
            d.dispatch(0, &mut fx);
            if d.stats().inflight == 1 {
                break;
            }
            assert!(d.stats().memory_bytes <= weight * 5, "memory stays bounded");
        }
        assert_eq!(d.stats().inflight, 1);
    }
}
