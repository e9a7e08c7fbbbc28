//! Pauses between attempts at a manager: exponential backoff with jitter, cut short by shutdown.
//!
//! Shared by the link's sync loop and the outbox's drain, so that after a manager restart a fleet
//! of agents comes back spread out instead of all at the same instant. What to retry and when to
//! move to another manager is each caller's decision.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Shortest and longest pause between attempts after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter: somewhere in the upper half of `BACKOFF_MIN * 2^attempt`.
pub fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

/// Sleeps `d` unless shutdown comes first; false on shutdown.
pub async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_MAX, "{attempt}: {d:?}");
            assert!(d >= BACKOFF_MIN / 2, "{attempt}: {d:?}");
        }
        assert!(backoff(20) >= BACKOFF_MAX / 2);
    }
}
