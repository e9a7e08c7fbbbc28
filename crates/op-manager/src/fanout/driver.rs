//! The leader's fan-out driver: it moves every running invocation forward by writing its
//! decisions ([`super::plan::decide`]) as `AdvanceInvocation` commands.
//!
//! It wakes when some invocation progressed (the hub's invocation channel: a host's result was
//! ingested, a release applied) and when the earliest deadline or batch wait comes due. Only the
//! leader decides, so the decisions are made once and replicated; a follower's driver idles and
//! takes over from the stored state if it becomes the leader. Nothing here is on the path of a
//! host's result to a waiting caller: streams read the applied state themselves.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use op_store::{Command, Store};
use tokio_util::sync::CancellationToken;

use super::plan::{self, Host};
use crate::error::DomainError;
use crate::hub::Hub;
use crate::state::{self, Writer};

/// The longest sleep between two looks, whatever is due: a guard, not a poll that matters.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// Pause after a failed write or read before trying again.
const RETRY: Duration = Duration::from_millis(500);
/// Least time between two passes. A pass reads every host of every running invocation, and a
/// fleet-wide invocation changes with every host's result: passes at most this often keep that
/// linear in the hosts instead of quadratic, and cost a batch release at most this much.
const MIN_PASS: Duration = Duration::from_millis(25);

/// Drives invocations until `shutdown`: reads them from `store`, writes decisions with
/// `writer`, wakes on `hub`'s invocation channel.
pub async fn run(store: Arc<Store>, writer: Writer, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut changes = hub.subscribe_invocations();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_PASS) => {}
        }
        changes.borrow_and_update();
        let sleep = if writer.is_leader() {
            match drive(&store, &writer).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "fan-out driver: could not advance invocations");
                    RETRY
                }
            }
        } else {
            MAX_SLEEP
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass over the running invocations; returns how long to sleep until something is due.
async fn drive(store: &Arc<Store>, writer: &Writer) -> Result<Duration, DomainError> {
    let live = state::read(store, |s| s.live_invocations()).await?;
    let now = Utc::now();
    let mut next = now + chrono::Duration::from_std(MAX_SLEEP).unwrap_or_default();
    for (row, targets) in live {
        let hosts: Vec<Host> = targets.iter().map(Host::from).collect();
        let d = plan::decide(&row.detail.options, &hosts, row.stopped.is_some(), now);
        if let Some(at) = d.wake_at {
            next = next.min(at);
        }
        if d.is_empty() {
            continue;
        }
        tracing::debug!(invocation = %row.id, release = d.release.len(), expire = d.expire.len(), stop = ?d.stop, finish = d.finish, "advancing invocation");
        writer
            .write(Command::AdvanceInvocation {
                id: row.id,
                at: now,
                release: d.release,
                expire: d.expire,
                stop: d.stop,
                finish: d.finish,
            })
            .await?;
    }
    // Wake a little after a deadline, so the expiry check (`not_after <= at`) holds.
    Ok((next - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
        .saturating_add(Duration::from_millis(5))
        .min(MAX_SLEEP))
}
