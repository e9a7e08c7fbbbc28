//! Runs the real `agentcli` binary and checks its output and exit codes: offline commands, and
//! commands against a real manager with real agents.

// Tests start real processes; the executor-only rule (clippy.toml) is for product code.
#![allow(clippy::disallowed_methods)]

mod edges;
mod events;
mod fleet;
mod front_ends;
mod logs;
mod notify;
mod offline;
mod seed;
mod snapshot;
