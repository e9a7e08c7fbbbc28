//! Fan-out: running a job or an ad-hoc command on many hosts now (DESIGN.md sections 5.4 and 6).
//!
//! An invocation is replicated state (op-store's `CreateInvocation`): its released hosts are
//! directives that ride each agent's open sync call, and the agents' run records settle them.
//! This module holds the manager's side of it:
//! - [`targets`]: which Ready nodes a selection picks, and which selected hosts are reported
//!   `unreachable` at once;
//! - [`plan`]: the rollout rules (batches, concurrency, stop-on-failure, deadlines) as one pure
//!   function;
//! - [`driver`]: the leader's loop that writes those decisions as commands;
//! - [`stream`]: the NDJSON answer of a waiting caller;
//! - [`results`]: stored rows as host results, summaries and views.
//!
//! The HTTP handlers are in `api::invoke`.

pub mod driver;
pub mod plan;
pub mod results;
pub mod stream;
pub mod targets;
