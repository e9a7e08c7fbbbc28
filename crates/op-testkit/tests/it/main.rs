//! Cross-component scenarios: real managers, real agents, real processes and signals.

// The scenarios start real binaries and job processes.
#![allow(clippy::disallowed_methods)]

mod fanout;
mod fleet;
mod packages;
mod support;
mod tls;
