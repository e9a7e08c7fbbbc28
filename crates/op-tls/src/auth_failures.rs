//! Failed authentications per client address, for every listener that checks a credential (the
//! manager's API and console, the agent's API): a guessing loop from one address is slowed to
//! [`MAX_AUTH_FAILURES`] guesses per [`AUTH_FAILURE_WINDOW`], then refused for [`AUTH_BLOCK`].
//!
//! Counting by address, not by credential, keeps a guesser from locking out anyone else: the
//! manager's own calls to an agent, and every other client, come from other addresses and are
//! served as before. The caller decides what counts as a failure (a presented, wrong credential)
//! and how a refusal is answered (429 with `Retry-After`).

use std::collections::HashMap;

/// Failed authentications per client address: past [`MAX_AUTH_FAILURES`] within
/// [`AUTH_FAILURE_WINDOW`], the address is refused everything for [`AUTH_BLOCK`], valid tokens
/// included (else a guess that hits would still tell itself apart).
#[derive(Debug, Default)]
pub struct FailureLimiter {
    by_ip: std::sync::Mutex<HashMap<std::net::IpAddr, FailureEntry>>,
}

#[derive(Debug)]
struct FailureEntry {
    window_start: std::time::Instant,
    failures: u32,
    blocked_until: Option<std::time::Instant>,
}

pub const MAX_AUTH_FAILURES: u32 = 50;
pub const AUTH_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
pub const AUTH_BLOCK: std::time::Duration = std::time::Duration::from_secs(60);
/// Addresses tracked at most; beyond, idle entries are dropped first.
const MAX_TRACKED: usize = 100_000;

impl FailureLimiter {
    /// `Err(seconds to wait)` while `ip` is blocked.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err((until - now).as_secs().max(1)),
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: std::net::IpAddr) {
        let now = std::time::Instant::now();
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, e| {
                now.duration_since(e.window_start) < AUTH_FAILURE_WINDOW
                    || e.blocked_until.is_some_and(|u| u > now)
            });
        }
        let e = map.entry(ip).or_insert(FailureEntry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.duration_since(e.window_start) >= AUTH_FAILURE_WINDOW {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= MAX_AUTH_FAILURES {
            if e.blocked_until.is_none_or(|u| u <= now) {
                tracing::warn!(%ip, failures = e.failures, "too many failed authentications; address blocked for {}s", AUTH_BLOCK.as_secs());
            }
            e.blocked_until = Some(now + AUTH_BLOCK);
        }
    }
}
