//! Runs the real `agentcli` binary and checks its output and exit codes.

// Tests start real processes; the executor-only rule (clippy.toml) is for product code.
#![allow(clippy::disallowed_methods)]

mod offline;
