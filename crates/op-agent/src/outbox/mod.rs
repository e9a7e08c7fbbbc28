//! The outbox: finished runs waiting for a manager's acknowledgement.
//!
//! Runs enter the outbox when the executor stores their final record (only while at least one
//! manager is configured; a standalone agent keeps its history locally). The outbox lives in the
//! state database, so it survives restarts, and it is bounded by a byte budget: when a new record
//! pushes it over, the oldest undelivered records are dropped and the drop is counted in the
//! database, the metrics, `/v1/status` and every heartbeat. Nothing is dropped silently.
//!
//! The manager link (a later module) drains it in batches: [`Outbox::peek_batch`], send, then
//! [`Outbox::ack`] with the ids the manager stored. Delivery is at least once; the manager
//! deduplicates by run id, and acknowledging twice is harmless.

use op_proto::RunRecord;
use uuid::Uuid;

use crate::error::AgentError;
use crate::state::{OutboxTotals, StateStore};

#[derive(Clone)]
pub struct Outbox {
    state: StateStore,
}

impl Outbox {
    pub fn new(state: StateStore) -> Outbox {
        Outbox { state }
    }

    /// The oldest `max` undelivered runs. They stay in the outbox until acknowledged.
    pub async fn peek_batch(&self, max: usize) -> Result<Vec<RunRecord>, AgentError> {
        self.state.outbox_peek(max).await
    }

    /// Removes delivered runs from the outbox; returns how many were still waiting.
    pub async fn ack(&self, run_ids: &[Uuid]) -> Result<u64, AgentError> {
        self.state.outbox_ack(run_ids.to_vec()).await
    }

    /// Depth, bytes and the number of runs ever dropped for the budget.
    pub async fn totals(&self) -> Result<OutboxTotals, AgentError> {
        self.state.outbox_totals().await
    }
}
