//! The outbox: finished runs waiting for a manager's acknowledgement, and the loop that sends
//! them.
//!
//! Runs enter the outbox when the executor stores their final record (only while at least one
//! manager is configured; a standalone agent keeps its history locally). The outbox lives in the
//! state database, so it survives restarts, and it is bounded by a byte budget: when a new record
//! pushes it over, the oldest undelivered records are dropped and the drop is counted in the
//! database, the metrics, `/v1/status` and every heartbeat. Nothing is dropped silently.
//!
//! - [`queue`]: the [`Outbox`] handle (peek, acknowledge, totals) over the queued rows;
//! - [`budget`]: the byte budget, applied in the transaction that queues a run;
//! - [`drain`]: the [`Drain`] loop, which sends batches through a [`Courier`] (the link, which
//!   keeps the connection to the managers) and acknowledges what the manager stored. Delivery is
//!   at least once; the manager deduplicates by run id, and acknowledging twice is harmless.

pub mod budget;
pub mod drain;
pub mod queue;

pub use drain::{Courier, Drain, Sent};
pub use queue::{Outbox, OutboxTotals};
