//! Directive acknowledgements (issue 25, "fan-out that ends fast"). An agent that acknowledges
//! directives names, in every sync call, the run directives of the last answer it applied
//! (`Heartbeat::received`). A host whose agent is stopped or hung keeps its connection open but
//! never does, and the fan-out driver reports it `unresponsive` once the invocation's `ack_secs`
//! pass, instead of waiting for the whole deadline.
//!
//! The sync handler hands acknowledgements here; [`flush_loop`] keeps only those that change
//! something (targets still awaiting one: an agent repeats its acknowledgement on every sync
//! while the run lasts) and writes them, a few milliseconds' worth at a time, as one
//! `AcknowledgeDirectives` command. Nothing waits on that write: the sync answer does not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use op_store::{Command, DirectiveAck, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::{self, Writer};

/// Most run ids one sync call may acknowledge (an agent runs at most a few hundred at once).
pub const MAX_ACKS_PER_SYNC: usize = 1024;
/// Acknowledgements arriving within this long go into one command: a fan-out's agents answer
/// within a few ms of each other.
const COALESCE: Duration = Duration::from_millis(5);
/// Pause after a failed write (not leader yet, no quorum) before trying the next batch.
const RETRY: Duration = Duration::from_millis(200);

/// Acknowledgements waiting to be written.
#[derive(Default)]
pub struct AckBuffer {
    pending: Mutex<Vec<DirectiveAck>>,
    wake: Notify,
}

impl AckBuffer {
    /// Takes `node`'s acknowledgement of `run_ids` (the excess beyond [`MAX_ACKS_PER_SYNC`] is
    /// dropped: it comes back with the next sync).
    pub fn offer(&self, node: Uuid, mut run_ids: Vec<Uuid>) {
        if run_ids.is_empty() {
            return;
        }
        run_ids.truncate(MAX_ACKS_PER_SYNC);
        if let Ok(mut p) = self.pending.lock() {
            p.push(DirectiveAck {
                node_id: node,
                run_ids,
            });
        }
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<DirectiveAck> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

/// Writes the acknowledgements that change something until `shutdown`.
pub async fn flush_loop(
    acks: Arc<AckBuffer>,
    store: Arc<Store>,
    writer: Writer,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = acks.wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        tokio::time::sleep(COALESCE).await;
        let taken = acks.take();
        let news = match state::read(&store, move |s| s.awaiting_ack(&taken)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not read which directives await acknowledgement");
                continue;
            }
        };
        if news.is_empty() {
            continue;
        }
        // A lost write is not retried: the agent acknowledges again with its next sync, while
        // the target still runs.
        if let Err(e) = writer
            .write(Command::AcknowledgeDirectives {
                at: Utc::now(),
                acks: news,
            })
            .await
        {
            tracing::debug!(error = %e, "could not write directive acknowledgements");
            tokio::time::sleep(RETRY).await;
        }
    }
}
