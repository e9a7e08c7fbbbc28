//! Cross-component scenarios: real managers, real agents, real processes and signals.

// The scenarios start real binaries and job processes.
#![allow(clippy::disallowed_methods)]

mod agent_upgrade;
mod backup;
mod browser;
mod cluster;
mod config_docs;
mod console;
mod delivery;
mod docs_commands;
mod events;
mod facts;
mod fanout;
mod faults;
mod fleet;
mod full_disk;
mod identity;
mod import_cycles;
mod labels;
mod logs;
mod metrics;
mod missed;
mod newhosts;
mod notify;
mod overload;
mod package_peers;
mod package_targeting;
mod packages;
mod packaging;
mod pause;
mod policies;
mod private_files;
mod quickstart;
mod retry;
mod rollouts;
mod runon;
mod secrets;
mod signals;
mod slow_clients;
mod support;
mod tls;
mod units;
mod watch_faults;
