//! Integration tests of op-agent: the real binary, real processes, real signals, real HTTP.

mod api;
mod cgroups;
mod cron;
mod executor;
mod faults;
mod formats;
mod jobs_dir;
mod once;
mod schedule;
mod shutdown;
mod support;
