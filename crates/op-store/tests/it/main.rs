//! op-store integration tests: real SQLite files in temp dirs, driven through `apply_batch` the
//! way the raft state machine drives it.

mod apply;
mod common;
mod console_reads;
mod events;
mod fixtures;
mod invocations;
mod late;
mod packages;
mod retention;
mod rollouts;
mod secrets;
mod snapshot;
