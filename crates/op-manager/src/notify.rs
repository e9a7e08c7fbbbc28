//! Notification delivery (issue 19): the leader sends each rule's matching events to its
//! receiver, in order, at least once, and commits each acknowledgement through raft.
//!
//! Only the leader delivers. When this manager becomes leader (or its term changes), it first
//! passes a read barrier, so everything committed before, including the acknowledgements of the
//! previous leader, is applied here; then it starts one worker per rule. A worker builds its
//! [`DeliveryQueue`] from the rule's committed position (`notify_delivery`, migration 10) and
//! health, offers the events after that position that the rule matches, in id order, and sends
//! the queue's head ([`attempt_due`]). A success is committed as `NotifyDelivered` before the
//! next event is sent, so an event is never sent again once its acknowledgement is committed; an
//! event whose acknowledgement did not make it (the leader died in between) is sent again by the
//! next leader with the same idempotency key. A failure is retried after the configured backoff
//! (`notify_retry_initial`, doubling up to `notify_retry_max`) and committed as `NotifyFailed`
//! when the error changes, and at most every [`FAILURE_COMMIT_EVERY`] otherwise, so `notify
//! list` on any manager shows a failing channel while a dead receiver cannot flood the log.
//!
//! Workers wake when events are applied (the hub's events signal, the one `GET
//! /v1/events?follow` waits on) and when their head's retry is due. The supervisor looks at the
//! saved rules every [`LOOK_EVERY`]: a new rule gets a worker, a removed one loses it, a replaced
//! one (new `updated_at`) gets a fresh worker from its committed position. Rules are independent:
//! a receiver that hangs until the timeout delays only its own rule. Before each attempt a
//! worker reads its rule as applied: once the rule is removed or replaced, it sends nothing more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use op_notify::{Attempt, ChannelHealth, DeliveryQueue, RetryPolicy, Rule, Sender, attempt_due};
use op_store::{Command, MAX_EVENT_PAGE, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::{self, Writer};

/// How often the leader compares the running workers with the saved rules.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A failure with the same error as the last committed one is committed at most this often.
pub const FAILURE_COMMIT_EVERY: Duration = Duration::from_secs(5);
/// One attempt (connect, send, answer) ends within this.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new term waits for the previous term's workers to commit what they delivered.
const FINISH_WAIT: Duration = Duration::from_secs(3);

/// What the delivery worker uses.
pub struct Notifier {
    /// Rules, their committed positions and the events.
    pub store: Arc<Store>,
    /// Commits acknowledgements and failures; tells whether this manager leads.
    pub writer: Writer,
    /// Wakes the workers when events were applied.
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// The backoff of a failed delivery.
    pub policy: RetryPolicy,
}

/// A running worker of one rule.
struct Worker {
    updated_at: DateTime<Utc>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Delivers until `shutdown`, on the leader only.
pub async fn run(notifier: Notifier, shutdown: CancellationToken) {
    let sender = match Sender::new(SEND_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "notifications will not be delivered");
            return;
        }
    };
    let n = Arc::new(notifier);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut term: Option<u64> = None;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let leading = n.writer.leading_term();
        if leading != term {
            // Let a worker finish committing what its receiver already accepted, so the next
            // term's queues start after it rather than sending it again.
            for task in stop(&mut workers, &n.metrics) {
                let _ = tokio::time::timeout(FINISH_WAIT, task).await;
            }
            term = None;
            let Some(t) = leading else { continue };
            // The previous leader's acknowledgements must be applied here before any queue is
            // built from them.
            if let Err(e) = n.writer.read_barrier().await {
                tracing::warn!(error = %e, "notifications wait for the read barrier");
                continue;
            }
            tracing::info!(term = t, "delivering notifications as the leader");
            term = Some(t);
        }
        if term.is_none() {
            continue;
        }
        let rules = match state::read(&n.store, |s| s.notify_rules()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the notification rules failed");
                continue;
            }
        };
        workers.retain(|name, w| {
            let saved = rules.iter().find(|r| r.rule.name == *name);
            let keep = saved.is_some_and(|r| r.updated_at == w.updated_at) && !w.task.is_finished();
            if !keep {
                w.cancel.cancel();
                if saved.is_none() {
                    n.metrics.notify_forget(Some(name));
                }
            }
            keep
        });
        for info in rules {
            if workers.contains_key(&info.rule.name) {
                continue;
            }
            let name = info.rule.name.clone();
            let cancel = shutdown.child_token();
            let task = match Rule::new(info.rule) {
                Ok(rule) => tokio::spawn(deliver(
                    n.clone(),
                    Arc::new(rule),
                    info.updated_at,
                    sender.clone(),
                    cancel.clone(),
                )),
                Err(e) => {
                    // Saved by a member that accepts what this one does not: say so once, and
                    // keep the worker slot so it is not retried every look.
                    tracing::warn!(rule = %name, error = %e, "the notification rule is not valid here; nothing is sent for it");
                    let cancel = cancel.clone();
                    tokio::spawn(async move { cancel.cancelled().await })
                }
            };
            workers.insert(
                name,
                Worker {
                    updated_at: info.updated_at,
                    cancel,
                    task,
                },
            );
        }
    }
    stop(&mut workers, &n.metrics);
}

/// Cancels every worker; answers their tasks, to wait for if wanted.
fn stop(workers: &mut HashMap<String, Worker>, metrics: &Metrics) -> Vec<JoinHandle<()>> {
    let tasks = workers
        .drain()
        .map(|(_, w)| {
            w.cancel.cancel();
            w.task
        })
        .collect();
    metrics.notify_forget(None);
    tasks
}

/// The failure last committed for a rule, to commit the next one only when it says something
/// new.
struct Reported {
    error: Option<String>,
    failures: u32,
    at: Option<Instant>,
}

/// One rule's worker: reads events, sends the head, commits the outcome, until `cancel`.
async fn deliver(
    n: Arc<Notifier>,
    rule: Arc<Rule>,
    updated_at: DateTime<Utc>,
    sender: Sender,
    cancel: CancellationToken,
) {
    let name = rule.name().to_string();
    // Subscribe before the first read, so an event applied in between wakes the next look.
    let mut applied = n.hub.subscribe_events();
    let lookup = name.clone();
    let saved = match state::read(&n.store, move |s| s.notify_rule(&lookup)).await {
        Ok(Some(info)) => info.delivery,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(rule = %name, error = %e, "reading the notification position failed");
            return;
        }
    };
    let health = ChannelHealth {
        consecutive_failures: saved.consecutive_failures,
        last_error: saved.last_error.clone(),
        last_failure: saved.last_failure,
        last_success: saved.last_success,
    };
    let mut queue = DeliveryQueue::new(&name, n.policy, saved.acknowledged).with_health(health);
    let mut offered = saved.acknowledged;
    let mut reported = Reported {
        error: saved.last_error,
        failures: saved.consecutive_failures,
        at: None,
    };
    loop {
        applied.borrow_and_update();
        loop {
            let after = offered;
            let page =
                match state::read(&n.store, move |s| s.events_after(after, MAX_EVENT_PAGE)).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(rule = %name, error = %e, "reading events failed");
                        break;
                    }
                };
            let full = page.len() >= MAX_EVENT_PAGE as usize;
            for event in page {
                offered = event.id;
                if rule.matches(&event) {
                    queue.offer(event);
                }
            }
            if !full {
                break;
            }
        }
        n.metrics
            .notify_state(&name, queue.len(), queue.health().consecutive_failures);
        if queue.due(Instant::now()).is_some() {
            // The rule as applied now: removed or replaced since this worker started, it sends
            // nothing more (the supervisor starts a fresh worker for a replaced rule), and a
            // position committed meanwhile drops what it covers.
            let lookup = name.clone();
            match state::read(&n.store, move |s| s.notify_rule(&lookup)).await {
                Ok(Some(info)) if info.updated_at == updated_at => {
                    queue.acknowledge(info.delivery.acknowledged);
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(rule = %name, error = %e, "reading the notification rule failed");
                }
            }
            if queue.due(Instant::now()).is_none() {
                continue;
            }
            let attempt = tokio::select! {
                a = attempt_due(&mut queue, &rule, &sender) => a,
                _ = cancel.cancelled() => return,
            };
            if let Some(attempt) = attempt {
                n.outcome(&name, &queue, attempt, &mut reported).await;
            }
            continue;
        }
        let retry = queue.next_attempt(Instant::now());
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = sleep_until(retry) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Sleeps until `at`, forever when there is nothing to retry.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Notifier {
    /// Counts the attempt and commits what it means for the replicated state.
    async fn outcome(
        &self,
        rule: &str,
        queue: &DeliveryQueue,
        attempt: Attempt,
        reported: &mut Reported,
    ) {
        let failures = queue.health().consecutive_failures;
        self.metrics.notify_delivery(rule, attempt.result.is_ok());
        self.metrics.notify_state(rule, queue.len(), failures);
        match attempt.result {
            Ok(receipt) => {
                tracing::debug!(rule, event = attempt.event_id, key = %attempt.key, status = receipt.status, "notification delivered");
                let command = Command::NotifyDelivered {
                    rule: rule.to_string(),
                    event_id: attempt.event_id,
                    at: Utc::now(),
                };
                if let Err(e) = self.writer.write(command).await {
                    // The receiver has it; a next leader may send it again, with the same key.
                    tracing::warn!(rule, event = attempt.event_id, error = %e, "committing a notification's acknowledgement failed");
                }
                *reported = Reported {
                    error: None,
                    failures: 0,
                    at: None,
                };
            }
            Err(e) => {
                let error = e.to_string();
                let wait = queue
                    .next_attempt(Instant::now())
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                tracing::warn!(rule, event = attempt.event_id, failures, error = %error, retry_in = ?wait, "notification delivery failed");
                let news = reported.failures == 0
                    || reported.error.as_deref() != Some(error.as_str())
                    || reported
                        .at
                        .is_none_or(|at| at.elapsed() >= FAILURE_COMMIT_EVERY);
                if !news {
                    return;
                }
                let command = Command::NotifyFailed {
                    rule: rule.to_string(),
                    event_id: attempt.event_id,
                    failures,
                    error: error.clone(),
                    at: Utc::now(),
                };
                match self.writer.write(command).await {
                    Ok(_) => {
                        *reported = Reported {
                            error: Some(error),
                            failures,
                            at: Some(Instant::now()),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(rule, error = %e, "committing a notification failure failed")
                    }
                }
            }
        }
    }
}
