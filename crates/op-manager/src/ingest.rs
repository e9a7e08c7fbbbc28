//! Run ingestion with group commit: the run batches agents post are written through raft by one
//! task, and the batches that arrive while a write is in flight go together in the next
//! `IngestRunBatches` command.
//!
//! A lone batch is written at once (no timer, no added latency); under load, one log entry
//! carries many agents' batches, so a fleet-wide `exec` whose thousand hosts answer within the
//! same second costs a few raft writes instead of a thousand. Each caller still gets its own
//! acknowledgement, after the command that holds its batch is applied.

use std::sync::Arc;

use op_proto::agent::{RunBatch, RunBatchAck};
use op_store::{Command, CommandResult, NodeRuns};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::DomainError;
use crate::metrics::{Metrics, RunDuration};
use crate::state::Writer;

/// Most run records one command carries; the rest wait for the next.
const MAX_RUNS_PER_COMMAND: usize = 5_000;
/// Batches that may wait for the writer; a caller beyond that waits to enqueue.
const QUEUE: usize = 10_000;

type Reply = oneshot::Sender<Result<RunBatchAck, DomainError>>;

/// The handle handlers submit batches to. Cheap to clone.
#[derive(Clone)]
pub struct RunIngest {
    tx: mpsc::Sender<(RunBatch, Reply)>,
}

/// The writer's end, handed to [`run`].
pub struct Queue(mpsc::Receiver<(RunBatch, Reply)>);

impl RunIngest {
    pub fn new() -> (RunIngest, Queue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (RunIngest { tx }, Queue(rx))
    }

    /// Stores `batch` (idempotent by run id) and returns what was new.
    pub async fn submit(&self, batch: RunBatch) -> Result<RunBatchAck, DomainError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((batch, reply))
            .await
            .map_err(|_| DomainError::Unavailable("the manager is shutting down".into()))?;
        answer
            .await
            .map_err(|_| DomainError::Unavailable("the manager is shutting down".into()))?
    }
}

/// Writes queued batches with `writer` until `shutdown`.
pub async fn run(
    writer: Writer,
    metrics: Arc<Metrics>,
    mut queue: Queue,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            next = queue.0.recv() => match next {
                Some(next) => next,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut waiting = vec![first];
        let mut runs = waiting[0].0.runs.len();
        while runs < MAX_RUNS_PER_COMMAND {
            match queue.0.try_recv() {
                Ok(next) => {
                    runs += next.0.runs.len();
                    waiting.push(next);
                }
                Err(_) => break,
            }
        }
        // The records move into the command; the duration histogram keeps only what it needs.
        let mut batches = Vec::with_capacity(waiting.len());
        let mut replies = Vec::with_capacity(waiting.len());
        for (batch, reply) in waiting {
            let durations: Vec<RunDuration> =
                batch.runs.iter().filter_map(RunDuration::of).collect();
            batches.push(NodeRuns {
                node_id: batch.node_id,
                runs: batch.runs,
            });
            replies.push((durations, reply));
        }
        let result = writer
            .write(Command::IngestRunBatches {
                at: chrono::Utc::now(),
                batches,
            })
            .await;
        match result {
            Ok(CommandResult::RunBatchesIngested { acks, trimmed })
                if acks.len() == replies.len() =>
            {
                metrics.pruned(trimmed);
                for ((durations, reply), ack) in replies.into_iter().zip(acks) {
                    metrics.runs_stored.inc_by(ack.accepted as u64);
                    // The ack counts duplicates but does not name them; a batch delivered again
                    // (a lost acknowledgement) is left out of the duration histogram.
                    if ack.duplicates == 0 {
                        metrics.runs_stored(&durations);
                    }
                    metrics.runs_duplicate.inc_by(ack.duplicates as u64);
                    let _ = reply.send(Ok(ack));
                }
            }
            Ok(_) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(DomainError::UnexpectedAnswer {
                        command: "IngestRunBatches",
                    }));
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
