//! op-manager integration tests: real managers (in process, or the real binary for restarts and
//! kill -9) on 127.0.0.1:0 with temp data dirs, spoken to with op-client, the same client the CLI
//! and the agent use. Agents are played by the tests through the agent protocol.

mod auth;
mod bad_input;
mod common;
mod credentials;
mod fixtures;
mod invoke;
mod jobs;
mod liveness;
mod once;
mod output;
mod packages;
mod release_fixtures;
mod restart;
mod runs;
mod sync;
mod watch;
