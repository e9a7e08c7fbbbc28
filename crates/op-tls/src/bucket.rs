//! A token bucket for byte rates: the manager's `--download-rate-limit` (package bytes it sends
//! per second, over all downloads together) and an agent's limit on chunks it serves to peers.
//!
//! The bucket holds at most one second of tokens, so a burst after an idle spell never exceeds
//! the rate by more than one second's worth. Senders take tokens before each piece they send and
//! wait (asynchronously, never holding a lock across the wait) when the bucket is empty; a piece
//! larger than the bucket is taken in parts, so any piece size works with any rate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second; also the bucket's size.
    rate: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens available now (may go negative: a taker that reserved ahead waits it out).
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket refilled at `rate` bytes per second, starting full. `rate` must be above 0.
    pub fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1);
        TokenBucket {
            rate,
            state: Mutex::new(State {
                tokens: rate as f64,
                at: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Reserves `n` tokens and says how long the caller must wait before sending them (zero
    /// when the bucket had them). Reservations queue in call order, so takers share the rate.
    pub fn reserve(&self, n: u64) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let cap = self.rate as f64;
        let refill = now.duration_since(s.at).as_secs_f64() * cap;
        s.tokens = (s.tokens + refill).min(cap);
        s.at = now;
        s.tokens -= n as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / cap)
        }
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        let mut left = n;
        while left > 0 {
            let part = left.min(self.rate);
            left -= part;
            let wait = self.reserve(part);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_one_second_then_makes_callers_wait() {
        let b = TokenBucket::new(1000);
        assert_eq!(b.reserve(1000), Duration::ZERO);
        let w = b.reserve(500);
        assert!(
            w > Duration::from_millis(400) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        // The next taker queues behind the first.
        let w2 = b.reserve(500);
        assert!(w2 > Duration::from_millis(900), "{w2:?}");
    }

    #[tokio::test]
    async fn take_holds_the_rate_over_many_pieces() {
        let b = TokenBucket::new(10_000);
        let start = Instant::now();
        for _ in 0..15 {
            b.take(1000).await;
        }
        // 15 000 bytes at 10 000/s with a full 10 000 bucket: at least half a second.
        let spent = start.elapsed();
        assert!(spent >= Duration::from_millis(480), "{spent:?}");
        // A piece larger than the bucket is taken in parts instead of never.
        b.take(12_000).await;
    }
}
