//! How many outbox entries the agent's conversation holds, counted in time linear in the
//! conversation (pure).
//!
//! The rule: walk the agent's user messages in id order and match the outbox entries in order
//! (a greedy subsequence match: a message typed by hand, or one the outbox has later, is
//! skipped). Messages arrive one by one (the event stream) or all at once (`/messages`), almost
//! always with ids above every id seen; the walk resumes where it stopped instead of starting
//! over, so each message is compared once. Only a message that arrives out of order or changes
//! its text makes the walk start over.

use std::collections::BTreeMap;

/// The matcher's state: the user messages seen (by id, a hash of their trimmed text) and how
/// far the walk got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxCount {
    seen: BTreeMap<i64, u64>,
    /// Outbox entries matched by the walk so far.
    matched: usize,
    /// The id of the last message the walk compared (`None`: it has not started).
    walked_to: Option<i64>,
}

impl OutboxCount {
    /// User messages seen.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether message `id` was seen.
    pub fn knows(&self, id: i64) -> bool {
        self.seen.contains_key(&id)
    }

    /// Outbox entries found in the conversation, in order.
    pub fn matched(&self) -> usize {
        self.matched
    }

    /// A user message of the conversation; `expected` are the hashes of the outbox entries this
    /// agent should have, in order. Returns whether it was news (a new id or a changed text).
    pub fn saw(&mut self, id: i64, hash: u64, expected: &[u64]) -> bool {
        match self.seen.insert(id, hash) {
            Some(old) if old == hash => return false,
            Some(_) => self.restart(),
            None if self.walked_to.is_some_and(|w| id <= w) => self.restart(),
            None => {}
        }
        self.walk(expected);
        true
    }

    /// The outbox grew (entries are only ever appended): messages the walk passed over after
    /// it matched every entry may match the new ones.
    pub fn outbox_changed(&mut self, expected: &[u64]) {
        if self.matched > expected.len() {
            // Not an append: count again from the start.
            self.restart();
        }
        self.walk(expected);
    }

    fn restart(&mut self) {
        self.matched = 0;
        self.walked_to = None;
    }

    /// Compares the messages after `walked_to`, in id order, while entries are left to match.
    fn walk(&mut self, expected: &[u64]) {
        let rest = match self.walked_to {
            Some(w) => self.seen.range(w.saturating_add(1)..),
            None => self.seen.range(..),
        };
        for (id, hash) in rest {
            let Some(next) = expected.get(self.matched) else {
                // Every entry matched: later messages wait for the outbox to grow.
                break;
            };
            if hash == next {
                self.matched += 1;
            }
            self.walked_to = Some(*id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule itself, quadratic and obviously right: the reference the matcher must agree
    /// with.
    fn reference(seen: &BTreeMap<i64, u64>, expected: &[u64]) -> usize {
        let mut n = 0;
        for hash in seen.values() {
            if n < expected.len() && *hash == expected[n] {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn counts_in_order_and_skips_foreign_and_early_messages() {
        // (messages in arrival order as (id, hash), outbox hashes, matched)
        type Case<'a> = (&'a [(i64, u64)], &'a [u64], usize);
        let cases: [Case; 8] = [
            (&[], &[1, 2], 0),
            (&[(1, 1), (3, 9), (5, 2)], &[1, 2], 2),
            (&[(1, 2), (3, 1)], &[1, 2], 1),
            (&[(1, 1), (3, 3), (5, 2), (7, 2)], &[1, 2, 2], 3),
            // Out of order: id 2 arrives after 5.
            (&[(1, 1), (5, 3), (2, 2)], &[1, 2, 3], 3),
            // A message's text changes (same id): counted again.
            (&[(1, 1), (3, 2), (3, 7)], &[1, 2], 1),
            // More messages than entries: the rest waits.
            (&[(1, 1), (2, 2), (3, 3)], &[1], 1),
            // Repeats of one entry count once each.
            (&[(1, 5), (2, 5), (3, 5)], &[5, 5], 2),
        ];
        for (i, (messages, expected, matched)) in cases.into_iter().enumerate() {
            let mut c = OutboxCount::default();
            for (id, hash) in messages {
                c.saw(*id, *hash, expected);
            }
            assert_eq!(c.matched(), matched, "case {i}");
            assert_eq!(
                c.matched(),
                reference(&c.seen, expected),
                "case {i} vs the rule"
            );
        }
    }

    #[test]
    fn a_grown_outbox_matches_messages_the_walk_passed_over() {
        let mut c = OutboxCount::default();
        for (id, hash) in [(1, 1), (2, 2), (3, 3)] {
            c.saw(id, hash, &[1]);
        }
        assert_eq!(c.matched(), 1);
        c.outbox_changed(&[1, 2, 3]);
        assert_eq!(c.matched(), 3);
        c.outbox_changed(&[1, 2, 3, 4]);
        assert_eq!(c.matched(), 3);
        assert!(c.saw(4, 4, &[1, 2, 3, 4]));
        assert_eq!(c.matched(), 4);
        assert!(!c.saw(4, 4, &[1, 2, 3, 4]), "a repeat is no news");
        // A shorter outbox is no append: counted again.
        c.outbox_changed(&[1]);
        assert_eq!(c.matched(), 1);
    }

    #[test]
    fn agrees_with_the_rule_on_pseudo_random_conversations() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        for round in 0..300 {
            let expected: Vec<u64> = (0..next(6)).map(|_| next(4)).collect();
            let mut grown = expected.clone();
            grown.extend((0..next(3)).map(|_| next(4)));
            let mut c = OutboxCount::default();
            for step in 0..next(12) {
                let id = if next(5) == 0 {
                    next(10) as i64
                } else {
                    100 + step as i64
                };
                c.saw(id, next(4), &expected);
                assert_eq!(c.matched(), reference(&c.seen, &expected), "round {round}");
            }
            c.outbox_changed(&grown);
            assert_eq!(
                c.matched(),
                reference(&c.seen, &grown),
                "round {round}, grown"
            );
        }
    }

    #[test]
    fn a_long_conversation_is_walked_once() {
        // 200 000 messages, one by one and in order, against an outbox of 100 000: the old
        // recount compared every message again for each one (4·10^10 steps); this walk
        // compares each message once.
        let expected: Vec<u64> = (0..100_000).collect();
        let mut c = OutboxCount::default();
        let started = std::time::Instant::now();
        for id in 0..200_000i64 {
            c.saw(id, (id / 2) as u64, &expected);
        }
        assert_eq!(c.matched(), 100_000);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
