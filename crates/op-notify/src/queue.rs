//! One rule's deliveries, in order. A [`DeliveryQueue`] holds the events a rule matched that its
//! receiver has not acknowledged yet; only the head is ever sent, and a failed head is retried
//! after a backoff ([`RetryPolicy`]) before anything behind it, so a receiver that was down gets
//! the events afterwards in the order they happened.
//!
//! The queue is pure: it takes the time as an argument and sends nothing, so its timing is
//! tested without waiting. [`attempt_due`] is the one async step that sends the due head with a
//! [`Sender`] and records the outcome. The queue's "acknowledged up to event X" position
//! ([`DeliveryQueue::acknowledged`]) is what the caller commits (through raft, in the manager);
//! a queue built from a committed position never sends an event at or below it again, and a
//! repeat of an unacknowledged event carries the same key.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use op_proto::events::Event;
use serde::Serialize;

use crate::{DeliveryError, Receipt, Rule, Sender, idempotency_key};

/// How long to wait before retrying a failed delivery: `initial`, then multiplied by `factor`
/// after each failure, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, doubling, at most 5 minutes.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            factor: 2,
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th consecutive failure (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let mut delay = self.initial;
        for _ in 1..failures {
            if delay >= self.max {
                break;
            }
            delay = delay.saturating_mul(self.factor.max(1));
        }
        delay.min(self.max)
    }
}

/// How a channel is doing, for `notify list`, metrics and the console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelHealth {
    /// Failed attempts since the last success (0: healthy).
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
}

/// One rule's pending deliveries.
#[derive(Debug)]
pub struct DeliveryQueue {
    rule: String,
    policy: RetryPolicy,
    acknowledged: u64,
    pending: VecDeque<Event>,
    /// When the head may be tried again; `None`: now.
    retry_at: Option<Instant>,
    health: ChannelHealth,
}

/// The outcome of one attempt.
#[derive(Debug)]
pub struct Attempt {
    pub event_id: u64,
    pub key: String,
    pub result: Result<Receipt, DeliveryError>,
}

impl DeliveryQueue {
    /// A queue for `rule` whose receiver has acknowledged every event up to `acknowledged`.
    pub fn new(rule: &str, policy: RetryPolicy, acknowledged: u64) -> DeliveryQueue {
        DeliveryQueue {
            rule: rule.to_string(),
            policy,
            acknowledged,
            pending: VecDeque::new(),
            retry_at: None,
            health: ChannelHealth::default(),
        }
    }

    /// The queue with the channel's health as last recorded (by another leader, say), so the
    /// backoff continues from its count of failures instead of starting over.
    pub fn with_health(mut self, health: ChannelHealth) -> DeliveryQueue {
        self.health = health;
        self
    }

    /// Queues an event the rule matched. Events must be offered in id order; one at or below
    /// the acknowledged position or the last queued event is already handled and is ignored
    /// (a new leader offers from its committed position, which may repeat some). Returns
    /// whether the event was queued.
    pub fn offer(&mut self, event: Event) -> bool {
        let last = self.pending.back().map_or(self.acknowledged, |e| e.id);
        if event.id <= last {
            return false;
        }
        self.pending.push_back(event);
        true
    }

    /// The head event and its key, if it may be sent at `now`.
    pub fn due(&self, now: Instant) -> Option<(&Event, String)> {
        let head = self.pending.front()?;
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        Some((head, idempotency_key(&self.rule, head.id)))
    }

    /// When the next attempt is due: `None` with nothing pending, `now` when the head is due.
    pub fn next_attempt(&self, now: Instant) -> Option<Instant> {
        self.pending.front()?;
        Some(self.retry_at.map_or(now, |at| at.max(now)))
    }

    /// Records that the receiver accepted event `id` (the head) at `at`. Returns the new
    /// acknowledged position for the caller to commit.
    pub fn record_success(&mut self, id: u64, at: DateTime<Utc>) -> u64 {
        if self.pending.front().is_some_and(|e| e.id == id) {
            self.pending.pop_front();
            self.acknowledged = id;
            self.retry_at = None;
            self.health.consecutive_failures = 0;
            self.health.last_success = Some(at);
        }
        self.acknowledged
    }

    /// Records that sending event `id` (the head) failed at `now` (`at` on the wall clock).
    /// Returns how long the head now waits.
    pub fn record_failure(
        &mut self,
        id: u64,
        error: &str,
        now: Instant,
        at: DateTime<Utc>,
    ) -> Duration {
        if self.pending.front().is_none_or(|e| e.id != id) {
            return Duration::ZERO;
        }
        self.health.consecutive_failures = self.health.consecutive_failures.saturating_add(1);
        self.health.last_error = Some(error.to_string());
        self.health.last_failure = Some(at);
        let delay = self.policy.delay(self.health.consecutive_failures);
        self.retry_at = Some(now + delay);
        delay
    }

    /// Moves the position to `up_to`, committed elsewhere (by another leader, say): events at or
    /// below it are dropped unsent.
    pub fn acknowledge(&mut self, up_to: u64) {
        if up_to <= self.acknowledged {
            return;
        }
        self.acknowledged = up_to;
        let before = self.pending.front().map(|e| e.id);
        while self.pending.front().is_some_and(|e| e.id <= up_to) {
            self.pending.pop_front();
        }
        if self.pending.front().map(|e| e.id) != before {
            self.retry_at = None;
        }
    }

    /// Every event up to this id has been accepted by the receiver.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn health(&self) -> &ChannelHealth {
        &self.health
    }

    pub fn rule(&self) -> &str {
        &self.rule
    }
}

/// Sends the queue's head if it is due and records the outcome; `None` when nothing is due.
/// The caller commits [`DeliveryQueue::acknowledged`] after a success and waits until
/// [`DeliveryQueue::next_attempt`] otherwise.
pub async fn attempt_due(
    queue: &mut DeliveryQueue,
    rule: &Rule,
    sender: &Sender,
) -> Option<Attempt> {
    let (event, key) = queue.due(Instant::now())?;
    let event = event.clone();
    let result = sender.deliver(rule, &event, &key).await;
    match &result {
        Ok(_) => {
            queue.record_success(event.id, Utc::now());
        }
        Err(e) => {
            queue.record_failure(event.id, &e.to_string(), Instant::now(), Utc::now());
        }
    }
    Some(Attempt {
        event_id: event.id,
        key,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64) -> Event {
        let mut e = crate::sample_event(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        e.id = id;
        e
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            factor: 3,
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_maximum() {
        let p = policy();
        let delays: Vec<u64> = (1..=5).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 3, 9, 10, 10]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn only_the_head_is_sent_and_a_failed_head_waits_its_backoff() {
        let t0 = Instant::now();
        let at = Utc::now();
        let mut q = DeliveryQueue::new("ops", policy(), 0);
        assert!(q.offer(event(1)));
        assert!(q.offer(event(2)));
        let (head, key) = q.due(t0).unwrap();
        assert_eq!((head.id, key.as_str()), (1, "op-1-ops"));

        assert_eq!(q.record_failure(1, "down", t0, at), Duration::from_secs(1));
        assert!(q.due(t0 + Duration::from_millis(999)).is_none());
        assert_eq!(q.next_attempt(t0), Some(t0 + Duration::from_secs(1)));
        // The repeat is the same event with the same key; event 2 waits behind it.
        let (head, key) = q.due(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((head.id, key.as_str()), (1, "op-1-ops"));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            q.record_failure(1, "still down", t1, at),
            Duration::from_secs(3)
        );
        assert_eq!(q.health().consecutive_failures, 2);
        assert_eq!(q.health().last_error.as_deref(), Some("still down"));

        assert_eq!(q.record_success(1, at), 1);
        assert_eq!(q.health().consecutive_failures, 0);
        assert_eq!(q.health().last_success, Some(at));
        // The next head is due at once, not after the old backoff.
        assert_eq!(q.due(t1).unwrap().0.id, 2);
        assert_eq!(q.record_success(2, at), 2);
        assert!(q.is_empty());
        assert_eq!(q.next_attempt(t1), None);
    }

    #[test]
    fn a_committed_position_is_never_sent_again() {
        // A new leader starts from the committed position 5 and offers from the event log,
        // including events the old leader had already delivered.
        let mut q = DeliveryQueue::new("ops", policy(), 5);
        for id in 3..=7 {
            q.offer(event(id));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.due(Instant::now()).unwrap().0.id, 6);
        // Out-of-order or repeated offers are ignored.
        assert!(!q.offer(event(6)));
        // Another member's commit moves the position and drops what it covers.
        q.acknowledge(6);
        assert_eq!(q.acknowledged(), 6);
        assert_eq!(q.due(Instant::now()).unwrap().0.id, 7);
        q.acknowledge(4);
        assert_eq!(q.acknowledged(), 6);
    }

    #[test]
    fn outcomes_for_an_event_that_is_no_longer_the_head_change_nothing() {
        let now = Instant::now();
        let mut q = DeliveryQueue::new("ops", policy(), 0);
        q.offer(event(1));
        q.offer(event(2));
        q.acknowledge(1);
        assert_eq!(
            q.record_failure(1, "late answer", now, Utc::now()),
            Duration::ZERO
        );
        assert_eq!(q.health().consecutive_failures, 0);
        assert_eq!(q.record_success(1, Utc::now()), 1);
        assert_eq!(q.len(), 1);
    }
}
