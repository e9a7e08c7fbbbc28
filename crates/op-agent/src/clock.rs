//! Time as the scheduler sees it: what time it is, and sleeping until a moment.
//!
//! The scheduler takes a [`Clock`] as an argument instead of reading the system's, so that a test
//! of "nothing more happens" (no retry beyond `Retries`, no second run of a once-job, no fire of a
//! removed job) steps a [`ManualClock`] through hours in microseconds instead of sleeping for
//! real. Production uses [`SystemClock`]. Process timeouts and kill graces stay on the system's
//! timers: they are the executor's, and a test of them needs real processes anyway.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once [`Clock::now`] has reached `t` (at once if it has).
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system's wall clock. A sleep is a timer for the time left now: a wall-clock jump during
/// it is not followed, so the scheduler never sleeps longer than a minute at a time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let left = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(left))
    }
}

/// A clock that moves only when told to: tests step it with [`ManualClock::advance`], and every
/// sleep whose moment has come wakes.
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: watch::channel(start).0,
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, and the clock as long as its users.
            let _ = now.wait_for(|now| *now >= t).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_wakes_when_the_clock_reaches_its_moment() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        let mut sleep = clock.sleep_until(start + chrono::Duration::seconds(10));
        clock.advance(chrono::Duration::seconds(9));
        assert!(futures_util::poll!(&mut sleep).is_pending());
        clock.advance(chrono::Duration::seconds(1));
        assert!(futures_util::poll!(&mut sleep).is_ready());
        assert_eq!(clock.now(), start + chrono::Duration::seconds(10));
        // A moment already past does not wait.
        assert!(futures_util::poll!(clock.sleep_until(start)).is_ready());
    }
}
