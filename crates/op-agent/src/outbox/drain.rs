//! The drain: sends queued runs to a manager in batches and acknowledges what it stored.
//!
//! It starts once a manager knows this node, then loops: peek the oldest batch, send it through
//! the [`Courier`], and on an answer take the whole batch out of the queue (stored, duplicate or
//! refused alike: a refused record would be refused again, so it is logged once and its local
//! history stays). On a failure the batch stays queued and the drain backs off. An empty queue
//! waits for the executor's wake-up ([`Outbox::ready`]) or a periodic recheck.
//!
//! Delivery is at least once: a batch whose answer was lost is sent again, and the manager
//! deduplicates by run id. Which manager receives it, and when to move to another, is the
//! courier's (the link's) business, not the drain's.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use op_client::ClientError;
use op_proto::agent::{AgentSettings, RunBatch, RunBatchAck};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::queue::Outbox;
use crate::backoff::{backoff, pause};
use crate::metrics::Metrics;

/// The queue is also checked this often, in case a wake-up was missed.
const RECHECK: Duration = Duration::from_secs(5);

/// How a batch reaches the manager in use: the link implements it with the connection it keeps.
pub trait Courier: Send + Sync {
    /// Resolves once a manager knows this node: runs may only be reported after that.
    fn registered(&self) -> BoxFuture<'_, ()>;

    /// Sends one batch to the manager in use. After a failure that another manager would not
    /// share (it is unreachable, or refuses), the next call goes to the next manager.
    fn send<'a>(&'a self, batch: &'a RunBatch) -> BoxFuture<'a, Sent>;
}

/// What became of one batch, and which manager it went to (for the log).
pub struct Sent {
    pub manager: String,
    pub result: Result<RunBatchAck, ClientError>,
}

/// The drain loop and what it works with.
pub struct Drain {
    pub outbox: Outbox,
    pub courier: Arc<dyn Courier>,
    pub metrics: Metrics,
    /// The node whose runs these are (every batch names it).
    pub node_id: Uuid,
}

impl Drain {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.courier.registered() => {}
            _ = shutdown.cancelled() => return,
        }
        let ready = self.outbox.ready();
        let batch_max = AgentSettings::default().run_batch_max;
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            // Register interest before looking, so a run stored in between still wakes us.
            let notified = ready.notified();
            let runs = match self.outbox.peek_batch(batch_max).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    if !pause(backoff(failures), &shutdown).await {
                        break;
                    }
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            if runs.is_empty() {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let ids: Vec<Uuid> = runs.iter().map(|r| r.run_id).collect();
            let batch = RunBatch {
                node_id: self.node_id,
                runs,
            };
            let sent = tokio::select! {
                s = self.courier.send(&batch) => s,
                _ = shutdown.cancelled() => break,
            };
            let url = sent.manager;
            match sent.result {
                Ok(ack) => {
                    failures = 0;
                    self.metrics.runs_delivered(&batch.runs, Utc::now());
                    tracing::debug!(
                        accepted = ack.accepted,
                        duplicates = ack.duplicates,
                        "runs delivered"
                    );
                    // A refused record would be refused again: it leaves the outbox with the
                    // rest (its local history stays), and the reason is logged once here.
                    for refused in &ack.refused {
                        tracing::error!(manager = %url, run_id = %refused.run_id, reason = %refused.reason, "the manager refused a run record; it will not be sent again");
                    }
                    if let Err(e) = self.outbox.ack(&ids).await {
                        tracing::error!(error = %e, "cannot acknowledge delivered runs");
                    }
                }
                Err(e) => {
                    tracing::warn!(manager = %url, error = %e, runs = ids.len(), "cannot deliver runs; they stay in the outbox");
                    if !pause(backoff(failures), &shutdown).await {
                        break;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}
