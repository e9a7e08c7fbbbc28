//! op-notify against real receivers: an HTTP sink started here, a real Prometheus Alertmanager
//! and a real SMTP server (Python's aiosmtpd). Each external program is required: a missing one
//! fails the test with the package to install (`.ci/run` installs them).

// The tests start Alertmanager and the SMTP server as real processes.
#![allow(clippy::disallowed_methods)]

mod alertmanager;
mod docs;
mod email;
mod rules;
mod support;
mod webhook;
