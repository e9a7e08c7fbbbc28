//! The rollout rules as one pure function: given an invocation's options, its hosts and the time,
//! which hosts to release, which to expire, whether to stop, whether it is finished, and when to
//! look again. The leader's driver and the create handler (the first release) both call
//! [`decide`], so the rules live in one place and are tested without a clock or a cluster.
//!
//! - A host past its `not_after` without a result is expired (`unreachable`); one whose agent did
//!   not acknowledge the directive by its `ack_by` is expired too (`unresponsive`: the store tells
//!   the two apart by the same times).
//! - Once `max_failures` hosts have failed (every final status but ok and cancelled), no host is
//!   released any more: the pending ones are cancelled. Hosts already running finish.
//! - Batches go in order: batch `b` starts when every host of the earlier batches is final and
//!   `batch_wait` has passed since the last of them ended.
//! - At most `max_concurrency` hosts run at once.
//! - The invocation is finished when no host is pending or running.

use chrono::{DateTime, Duration, Utc};
use op_proto::invoke::{HostStatus, InvocationOptions};
use op_store::TargetRow;
use uuid::Uuid;

/// What the rules need of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub run_id: Uuid,
    pub batch: u32,
    pub status: HostStatus,
    pub not_after: Option<DateTime<Utc>>,
    /// Set while the host's agent has yet to acknowledge the directive.
    pub ack_by: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Host {
    /// The earliest time this running host expires without a result: its acknowledgement time
    /// while unacknowledged, else its deadline.
    fn expires_at(&self) -> Option<DateTime<Utc>> {
        match (self.ack_by, self.not_after) {
            (Some(a), Some(n)) => Some(a.min(n)),
            (a, n) => a.or(n),
        }
    }
}

impl From<&TargetRow> for Host {
    fn from(t: &TargetRow) -> Host {
        Host {
            run_id: t.run_id,
            batch: t.batch,
            status: t.status,
            not_after: t.not_after,
            ack_by: t.ack_by,
            finished_at: t.finished_at,
        }
    }
}

/// The decisions for one invocation at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub release: Vec<Uuid>,
    pub expire: Vec<Uuid>,
    /// Why the pending hosts are cancelled (`max_failures` reached).
    pub stop: Option<String>,
    pub finish: bool,
    /// When something will be due without any new result: a deadline or the end of a batch wait.
    pub wake_at: Option<DateTime<Utc>>,
}

impl Decision {
    /// True when there is something to write.
    pub fn is_empty(&self) -> bool {
        self.release.is_empty() && self.expire.is_empty() && self.stop.is_none() && !self.finish
    }
}

/// Applies the rules; `stopped` says whether the invocation was already stopped or cancelled.
pub fn decide(
    options: &InvocationOptions,
    hosts: &[Host],
    stopped: bool,
    now: DateTime<Utc>,
) -> Decision {
    let mut d = Decision::default();
    // Work on a copy that already reflects this decision's expiries.
    let mut hosts: Vec<Host> = hosts.to_vec();
    for h in hosts.iter_mut() {
        if h.status == HostStatus::Running && h.expires_at().is_some_and(|t| t <= now) {
            d.expire.push(h.run_id);
            h.status = if h.not_after.is_some_and(|t| t <= now) {
                HostStatus::Unreachable
            } else {
                HostStatus::Unresponsive
            };
            h.finished_at = Some(now);
        }
    }
    let pending = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Pending)
        .count();
    let failures = hosts.iter().filter(|h| h.status.is_failure()).count();
    let mut stopping = stopped;
    if let Some(max) = options.max_failures
        && failures >= max as usize
        && pending > 0
        && !stopped
    {
        d.stop = Some(format!(
            "stopped after {failures} failed host(s) (max_failures {max}); {pending} host(s) not started"
        ));
        stopping = true;
    }
    if !stopping && pending > 0 {
        release(options, &hosts, now, &mut d);
    }
    let running = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Running)
        .count();
    let still_pending = if stopping {
        0
    } else {
        pending - d.release.len()
    };
    d.finish = running == 0 && d.release.is_empty() && still_pending == 0;
    let deadline = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Running)
        .filter_map(Host::expires_at)
        .min();
    d.wake_at = match (d.wake_at, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    d
}

/// Releases the next hosts of the lowest batch with pending hosts, if its turn has come.
fn release(options: &InvocationOptions, hosts: &[Host], now: DateTime<Utc>, d: &mut Decision) {
    let Some(batch) = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Pending)
        .map(|h| h.batch)
        .min()
    else {
        return;
    };
    let earlier: Vec<&Host> = hosts.iter().filter(|h| h.batch < batch).collect();
    if earlier.iter().any(|h| !h.status.is_final()) {
        return;
    }
    if batch > 0 && options.batch_wait_secs > 0 {
        let ended = earlier.iter().filter_map(|h| h.finished_at).max();
        if let Some(ended) = ended {
            let start = ended + Duration::seconds(options.batch_wait_secs as i64);
            if start > now {
                d.wake_at = Some(start);
                return;
            }
        }
    }
    let running = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Running)
        .count();
    let slots = match options.max_concurrency {
        Some(max) => (max as usize).saturating_sub(running),
        None => usize::MAX,
    };
    d.release = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Pending && h.batch == batch)
        .take(slots)
        .map(|h| h.run_id)
        .collect();
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap() + Duration::seconds(secs)
    }

    fn hosts(batches: &[u32]) -> Vec<Host> {
        batches
            .iter()
            .enumerate()
            .map(|(i, b)| Host {
                run_id: Uuid::from_u128(i as u128 + 1),
                batch: *b,
                status: HostStatus::Pending,
                not_after: None,
                ack_by: None,
                finished_at: None,
            })
            .collect()
    }

    fn ids(v: &[Uuid]) -> Vec<u128> {
        v.iter().map(|u| u.as_u128()).collect()
    }

    fn set(h: &mut Host, status: HostStatus, at: i64) {
        h.status = status;
        match status {
            HostStatus::Running => h.not_after = Some(t(at + 60)),
            _ => h.finished_at = Some(t(at)),
        }
    }

    #[test]
    fn everything_at_once_by_default() {
        let d = decide(
            &InvocationOptions::default(),
            &hosts(&[0, 0, 0]),
            false,
            t(0),
        );
        assert_eq!(ids(&d.release), [1, 2, 3]);
        assert!(!d.finish);
    }

    #[test]
    fn batches_go_in_order_after_the_wait() {
        let opts = InvocationOptions {
            batch_hosts: Some(2),
            batch_wait_secs: 5,
            deadline_secs: 60,
            ..InvocationOptions::default()
        };
        let mut h = hosts(&[0, 0, 1, 1, 2]);
        assert_eq!(ids(&decide(&opts, &h, false, t(0)).release), [1, 2]);
        set(&mut h[0], HostStatus::Running, 0);
        set(&mut h[1], HostStatus::Running, 0);
        // One of batch 0 still runs: nothing more, and the next wake is its deadline.
        set(&mut h[0], HostStatus::Ok, 3);
        let d = decide(&opts, &h, false, t(4));
        assert!(d.is_empty() && d.wake_at == Some(t(60)), "{d:?}");
        set(&mut h[1], HostStatus::Failed, 4);
        // Batch 0 is over at 4 s: batch 1 starts at 9 s.
        let d = decide(&opts, &h, false, t(5));
        assert!(d.release.is_empty());
        assert_eq!(d.wake_at, Some(t(9)));
        assert_eq!(ids(&decide(&opts, &h, false, t(9)).release), [3, 4]);
    }

    #[test]
    fn concurrency_is_a_sliding_window() {
        let opts = InvocationOptions {
            max_concurrency: Some(2),
            ..InvocationOptions::default()
        };
        let mut h = hosts(&[0, 0, 0, 0]);
        assert_eq!(ids(&decide(&opts, &h, false, t(0)).release), [1, 2]);
        set(&mut h[0], HostStatus::Running, 0);
        set(&mut h[1], HostStatus::Running, 0);
        assert!(decide(&opts, &h, false, t(1)).release.is_empty());
        set(&mut h[0], HostStatus::Ok, 1);
        assert_eq!(ids(&decide(&opts, &h, false, t(1)).release), [3]);
    }

    #[test]
    fn deadlines_expire_and_stop_on_failure_cancels_the_rest() {
        let opts = InvocationOptions {
            batch_hosts: Some(1),
            max_failures: Some(1),
            ..InvocationOptions::default()
        };
        let mut h = hosts(&[0, 1, 2]);
        set(&mut h[0], HostStatus::Running, 0);
        let d = decide(&opts, &h, false, t(60));
        assert_eq!(ids(&d.expire), [1]);
        assert!(d.stop.as_deref().unwrap().contains("2 host(s) not started"));
        assert!(d.release.is_empty());
        assert!(d.finish, "nothing runs and the rest is cancelled");
        // Already stopped: nothing is released, and the stop is not repeated.
        let mut h2 = hosts(&[0, 1]);
        set(&mut h2[0], HostStatus::Ok, 1);
        let d = decide(&opts, &h2, true, t(2));
        assert!(d.release.is_empty() && d.stop.is_none() && d.finish);
    }

    #[test]
    fn finished_when_every_host_is_final() {
        let mut h = hosts(&[0, 0]);
        set(&mut h[0], HostStatus::Ok, 1);
        set(&mut h[1], HostStatus::Skipped, 1);
        let d = decide(&InvocationOptions::default(), &h, false, t(2));
        assert!(d.finish && d.release.is_empty() && d.wake_at.is_none());
    }

    #[test]
    fn a_host_that_does_not_acknowledge_is_dropped_early_and_one_that_does_has_its_deadline() {
        let mut h = hosts(&[0, 0, 0]);
        for host in h.iter_mut() {
            set(host, HostStatus::Running, 0);
            host.ack_by = Some(t(5));
        }
        // Host 2 acknowledged; host 3 already answered.
        h[1].ack_by = None;
        set(&mut h[2], HostStatus::Ok, 1);
        let opts = InvocationOptions::default();
        let d = decide(&opts, &h, false, t(2));
        assert!(d.expire.is_empty());
        assert_eq!(
            d.wake_at,
            Some(t(5)),
            "the next look is the acknowledgement time"
        );
        let d = decide(&opts, &h, false, t(5));
        assert_eq!(ids(&d.expire), [1], "only the silent host");
        assert!(!d.finish, "host 2 still runs");
        // Host 2 keeps its whole deadline.
        h[0].status = HostStatus::Unresponsive;
        let d = decide(&opts, &h, false, t(30));
        assert!(d.expire.is_empty() && d.wake_at == Some(t(60)), "{d:?}");
    }
}
