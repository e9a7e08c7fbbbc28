//! The op-agent wire contract.
//!
//! Every type that crosses a process boundary lives here: the job model and the seed's task-file
//! format, the cron [`Schedule`], host selection, node and run records, package references, and the
//! request/response bodies of the manager and agent APIs. This crate does no I/O and owns no async
//! runtime (ARCHITECTURE.md, invariant 1), so every function here is a pure function of its inputs
//! and can be tested, fuzzed and reused by the agent, the manager, the CLI and the benchmarks alike.

pub mod agent;
pub mod agent_upgrade;
pub mod analysis;
pub mod api;
pub mod chunks;
pub mod config_reference;
pub mod events;
pub mod expect;
pub mod exposition;
pub mod facts;
pub mod holds;
pub mod hosts;
pub mod incidents;
pub mod invoke;
pub mod job;
pub mod judged;
pub mod local;
pub mod node;
pub mod package;
pub mod params;
pub mod policy;
pub mod rollout;
pub mod run;
pub mod runon;
pub mod schedule;
pub mod secret;
pub mod units;
pub mod watch;

pub use api::{API_VERSION, API_VERSION_HEADER, ErrorBody};
pub use hosts::{HostIdentity, HostPattern, HostSelector};
pub use job::{Concurrency, JobSpec, TaskFileError};
pub use node::{NodeInfo, NodeStatus};
pub use run::{RunRecord, RunStatus, Trigger};
pub use schedule::{Schedule, ScheduleError, Zone};
