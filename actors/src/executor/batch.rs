//! Dynamic batching (pure), as Triton's dynamic batcher does it.
//!
//! Requests wait in a queue ordered by priority (higher first), then by
//! arrival. A batch is ready when the queued rows fill `max_batch_size`, or
//! when the oldest request has waited `max_queue_delay`; it takes requests
//! in queue order while their rows fit. A full queue refuses new requests.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How a model's requests are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows in one batch; 1 runs requests one at a time.
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    /// Most requests waiting; beyond it requests are refused (HTTP 429).
    pub max_queue_size: usize,
}

struct Waiting<T> {
    item: T,
    rows: usize,
    enqueued_at: Instant,
}

/// The queue is full; the request is handed back.
#[derive(Debug)]
pub struct QueueFull<T>(pub T);

/// Requests waiting for one model.
pub struct BatchQueue<T> {
    policy: BatchPolicy,
    order: BTreeMap<(Reverse<u8>, u64), Waiting<T>>,
    arrivals: BTreeMap<u64, Instant>,
    rows: usize,
    next_seq: u64,
}

impl<T> BatchQueue<T> {
    pub fn new(policy: BatchPolicy) -> Self {
        Self { policy, order: BTreeMap::new(), arrivals: BTreeMap::new(), rows: 0, next_seq: 0 }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Queues a request of `rows` rows; `rows` must not exceed `max_batch_size`.
    pub fn push(&mut self, item: T, rows: usize, priority: u8, now: Instant) -> Result<(), QueueFull<T>> {
        debug_assert!(rows <= self.policy.max_batch_size.max(1), "caller checks rows against max_batch_size");
        if self.order.len() >= self.policy.max_queue_size {
            return Err(QueueFull(item));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((Reverse(priority), seq), Waiting { item, rows, enqueued_at: now });
        self.arrivals.insert(seq, now);
        self.rows += rows;
        Ok(())
    }

    fn oldest(&self) -> Option<Instant> {
        self.arrivals.values().next().copied()
    }

    /// When the queue becomes ready to run a batch with no new arrivals.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.oldest()?;
        if self.rows >= self.policy.max_batch_size {
            return Some(oldest);
        }
        Some(oldest + self.policy.max_queue_delay)
    }

    /// The next batch, if one is ready at `now`, with each request's queue
    /// time.
    pub fn pop_ready(&mut self, now: Instant) -> Option<Vec<(T, Duration)>> {
        if now < self.next_deadline()? {
            return None;
        }
        let limit = self.policy.max_batch_size.max(1);
        let mut taken_rows = 0;
        let mut keys = Vec::new();
        for (key, waiting) in &self.order {
            if taken_rows + waiting.rows > limit {
                break;
            }
            taken_rows += waiting.rows;
            keys.push(*key);
        }
        let batch = keys
            .into_iter()
            .filter_map(|key| {
                let waiting = self.order.remove(&key)?;
                self.arrivals.remove(&key.1);
                self.rows -= waiting.rows;
                Some((waiting.item, now.saturating_duration_since(waiting.enqueued_at)))
            })
            .collect();
        Some(batch)
    }
}

/// Splits a batch into groups of items with equal keys (requests whose
/// inputs can be joined), in the order each key first appears; items keep
/// their order within a group.
pub fn group_by_key<T, K: PartialEq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let item_key = key(&item);
        match groups.iter_mut().find(|(group_key, _)| *group_key == item_key) {
            Some((_, group)) => group.push(item),
            None => groups.push((item_key, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a test picks any instant as its start")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(max_batch_size: usize, delay_ms: u64, max_queue_size: usize) -> BatchPolicy {
        BatchPolicy { max_batch_size, max_queue_delay: Duration::from_millis(delay_ms), max_queue_size }
    }

    fn ids(batch: Option<Vec<(u32, Duration)>>) -> Vec<u32> {
        batch.unwrap_or_default().into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn groups_follow_first_appearance_and_keep_order() {
        type Case = (&'static [(u32, char)], &'static [&'static [u32]]);
        let table: [Case; 5] = [
            (&[], &[]),
            (&[(1, 'a')], &[&[1]]),
            (&[(1, 'a'), (2, 'a'), (3, 'a')], &[&[1, 2, 3]]),
            (&[(1, 'a'), (2, 'b'), (3, 'a'), (4, 'c'), (5, 'b')], &[&[1, 3], &[2, 5], &[4]]),
            (&[(1, 'b'), (2, 'a')], &[&[1], &[2]]),
        ];
        for (items, expected) in table {
            let groups = group_by_key(items.to_vec(), |(_, key)| *key);
            let ids: Vec<Vec<u32>> = groups.iter().map(|g| g.iter().map(|(id, _)| *id).collect()).collect();
            let expected: Vec<Vec<u32>> = expected.iter().map(|g| g.to_vec()).collect();
            assert_eq!(ids, expected, "{items:?}");
        }
    }

    #[test]
    fn waits_for_the_delay_then_runs_what_is_queued() {
        let start = Instant::now();
        let mut queue = BatchQueue::new(policy(8, 2, 100));
        queue.push(1, 1, 5, start).expect("room");
        queue.push(2, 1, 5, start + Duration::from_millis(1)).expect("room");
        assert!(queue.pop_ready(start + Duration::from_millis(1)).is_none());
        assert_eq!(queue.next_deadline(), Some(start + Duration::from_millis(2)));
        let batch = queue.pop_ready(start + Duration::from_millis(2)).expect("ready");
        assert_eq!(batch.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(batch[0].1, Duration::from_millis(2), "queue time of the first");
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_batch_runs_at_once_and_leftovers_wait() {
        let now = Instant::now();
        let mut queue = BatchQueue::new(policy(4, 1000, 100));
        for id in 0..3 {
            queue.push(id, 2, 5, now).expect("room");
        }
        assert_eq!(ids(queue.pop_ready(now)), vec![0, 1]);
        assert!(queue.pop_ready(now).is_none(), "2 rows of 4: waits for the delay");
        assert_eq!(ids(queue.pop_ready(now + Duration::from_secs(1))), vec![2]);
    }

    #[test]
    fn higher_priority_goes_first() {
        let now = Instant::now();
        let mut queue = BatchQueue::new(policy(2, 0, 100));
        queue.push(1, 1, 5, now).expect("room");
        queue.push(2, 1, 1, now).expect("room");
        queue.push(3, 1, 9, now).expect("room");
        assert_eq!(ids(queue.pop_ready(now)), vec![3, 1]);
        assert_eq!(ids(queue.pop_ready(now)), vec![2]);
    }

    #[test]
    fn batching_off_runs_one_at_a_time() {
        let now = Instant::now();
        let mut queue = BatchQueue::new(policy(1, 5000, 100));
        queue.push(1, 1, 5, now).expect("room");
        queue.push(2, 1, 5, now).expect("room");
        assert_eq!(ids(queue.pop_ready(now)), vec![1]);
        assert_eq!(ids(queue.pop_ready(now)), vec![2]);
    }

    #[test]
    fn full_queue_refuses() {
        let now = Instant::now();
        let mut queue = BatchQueue::new(policy(8, 2, 2));
        queue.push(1, 1, 5, now).expect("room");
        queue.push(2, 1, 5, now).expect("room");
        assert!(matches!(queue.push(3, 1, 5, now), Err(QueueFull(3))));
    }

    proptest! {
        /// Every pushed request comes out exactly once, no batch exceeds
        /// the limit, and within a batch priorities never increase.
        #[test]
        fn batches_respect_limits(requests in proptest::collection::vec((1usize..=4, 0u8..=10), 1..60)) {
            let now = Instant::now();
            let mut queue = BatchQueue::new(policy(4, 0, 1000));
            for (id, (rows, priority)) in requests.iter().enumerate() {
                queue.push((id, *rows, *priority), *rows, *priority, now).expect("room");
            }
            let mut seen = Vec::new();
            while let Some(batch) = queue.pop_ready(now) {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.iter().map(|((_, rows, _), _)| rows).sum::<usize>() <= 4);
                prop_assert!(batch.windows(2).all(|w| (w[0].0).2 >= (w[1].0).2));
                seen.extend(batch.into_iter().map(|((id, _, _), _)| id));
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..requests.len()).collect::<Vec<_>>());
        }
    }
}
