//! The manager-wide cap on concurrent package downloads.
//!
//! A download holds a [`DownloadPermit`] for as long as its body is being sent (the permit lives
//! inside the response stream, so a client that disconnects releases it at once). When all
//! permits are taken the request is refused with 429 and `Retry-After` instead of queueing: a
//! queue would hold sockets and memory for every waiting agent, while a refusal lets each agent
//! back off with jitter and come back. The in-flight count and its peak are exported on
//! `/metrics`, so the cap can be checked from outside.
//!
//! `--download-rate-limit` adds a token bucket shared by every download of this manager (whole
//! blobs and chunks alike): each piece of a body waits for its tokens before it is sent, so the
//! manager's package egress stays at the rate however many agents download.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use op_tls::bucket::TokenBucket;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Seconds a refused downloader is told to wait (it adds its own jitter).
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, Clone, Default)]
pub struct DownloadMetrics {
    pub in_flight: Gauge,
    pub peak: Gauge,
    pub refused: Counter,
    pub served: Counter,
    pub bytes: Counter,
}

#[derive(Debug)]
pub struct DownloadGate {
    slots: Arc<Semaphore>,
    in_flight: Arc<AtomicI64>,
    peak: Arc<AtomicI64>,
    metrics: DownloadMetrics,
    rate: Option<Arc<TokenBucket>>,
}

/// One download in progress; dropping it frees the slot.
#[derive(Debug)]
pub struct DownloadPermit {
    _slot: OwnedSemaphorePermit,
    in_flight: Arc<AtomicI64>,
    metrics: DownloadMetrics,
    rate: Option<Arc<TokenBucket>>,
}

impl DownloadPermit {
    /// Counts bytes sent under this permit.
    pub fn sent(&self, n: u64) {
        self.metrics.bytes.inc_by(n);
    }

    /// The manager-wide rate limit, if one is set: take `n` tokens before sending `n` bytes.
    pub fn rate(&self) -> Option<Arc<TokenBucket>> {
        self.rate.clone()
    }
}

impl Drop for DownloadPermit {
    fn drop(&mut self) {
        let now = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.metrics.in_flight.set(now);
    }
}

impl DownloadGate {
    /// `rate`: package bytes per second over all downloads (0: no limit).
    pub fn new(limit: usize, rate: u64, metrics: DownloadMetrics) -> DownloadGate {
        DownloadGate {
            rate: (rate > 0).then(|| Arc::new(TokenBucket::new(rate))),
            slots: Arc::new(Semaphore::new(limit)),
            in_flight: Arc::new(AtomicI64::new(0)),
            peak: Arc::new(AtomicI64::new(0)),
            metrics,
        }
    }

    /// A slot, or None when `limit` downloads are already running.
    pub fn try_enter(&self) -> Option<DownloadPermit> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.refused.inc();
            return None;
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let peak = self.peak.fetch_max(now, Ordering::SeqCst).max(now);
        self.metrics.in_flight.set(now);
        self.metrics.peak.set(peak);
        self.metrics.served.inc();
        Some(DownloadPermit {
            _slot: slot,
            in_flight: self.in_flight.clone(),
            metrics: self.metrics.clone(),
            rate: self.rate.clone(),
        })
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_tracks_the_peak() {
        let gate = DownloadGate::new(2, 0, DownloadMetrics::default());
        let a = gate.try_enter().unwrap();
        let b = gate.try_enter().unwrap();
        assert!(gate.try_enter().is_none());
        assert_eq!((gate.in_flight(), gate.peak()), (2, 2));
        drop(a);
        assert_eq!(gate.in_flight(), 1);
        let c = gate.try_enter().unwrap();
        drop((b, c));
        assert_eq!((gate.in_flight(), gate.peak()), (0, 2));
        assert_eq!(gate.metrics.refused.get(), 1);
        assert_eq!(gate.metrics.served.get(), 3);
    }
}
