//! Notification delivery for op-agent events (issue 19).
//!
//! The manager derives [`Event`]s from what it applies and keeps the delivery position of each
//! rule in the replicated state; this crate does everything between "this event, this rule" and
//! "the receiver said yes":
//! - [`Rule`]: a [`NotifyRule`] checked and compiled (its body template parsed), with
//!   [`Rule::matches`];
//! - [`payload`]: what each channel receives: the webhook JSON (or the rendered template) and
//!   its HMAC signature, Alertmanager v2 alerts (resolved on recovery), the email message;
//! - [`Sender::deliver`]: one attempt to one receiver, answering a [`Receipt`] (what the receiver
//!   said) or a [`DeliveryError`] that names the receiver and the reason;
//! - [`DeliveryQueue`]: one rule's events in order, the head retried with a [`RetryPolicy`], the
//!   channel's [`ChannelHealth`], and the "acknowledged up to event X" position the caller
//!   commits.
//!
//! Delivery is at least once: every payload carries an idempotency key derived from the rule and
//! the event ([`idempotency_key`]), so a repeat after a failure or a leader change carries the
//! same key. Secrets (HMAC key, SMTP password) are read from files at send time, never held in a
//! rule (DESIGN 13.6). What this crate deliberately leaves to the manager: deriving events,
//! storing rules and events, committing acknowledgements through raft, and the API and CLI.

pub mod payload;
mod queue;
mod rule;
mod send;

pub use op_proto::events::{Channel, Event, EventKind, NotifyFilter, NotifyRule, RuleError};
pub use queue::{Attempt, ChannelHealth, DeliveryQueue, RetryPolicy, attempt_due};
pub use rule::Rule;
pub use send::{DeliveryError, Receipt, Sender};

use chrono::{DateTime, Utc};

/// The idempotency key of `rule` delivering event `event_id`: the same on every attempt and on
/// every manager, different for two rules sending the same event. It is also valid inside an
/// email's Message-ID (rule names are `[A-Za-z0-9._-]`).
pub fn idempotency_key(rule: &str, event_id: u64) -> String {
    format!("op-{event_id}-{rule}")
}

/// The event `notify test` sends: a `run.failed` of a job named `notify-test` on two made-up
/// hosts, so a receiver's templates and routes can be tried without breaking anything.
pub fn sample_event(time: DateTime<Utc>) -> Event {
    Event {
        id: 0,
        kind: EventKind::RunFailed,
        time,
        job: Some("notify-test".into()),
        package: None,
        hosts: vec!["sample-host-1".into(), "sample-host-2".into()],
        host_count: 2,
        selected_hosts: 2,
        host_labels: Vec::new(),
        summary: "notify-test failed on 2 of 2 hosts: this is a test notification from op-agent"
            .into(),
        url: String::new(),
        incident: None,
        opened_at: None,
        signature: Some("this is a test notification from op-agent".into()),
    }
}
