//! The NDJSON answer of a waiting invocation: one [`InvocationEvent`] per line, written as the
//! applied state changes.
//!
//! The stream follows the replicated state, not the leader's driver, so any manager member could
//! serve it: it wakes on the hub's invocation channel, reads the invocation, and writes a
//! `result` line for every host that became final since the last look. When every host is final
//! it writes the `summary` and ends. While nothing happens it writes a `progress` line every
//! [`PROGRESS_EVERY`], so the caller (and any proxy) sees the call is alive. As a last guard, if
//! the state stops moving for longer than any deadline allows (no leader to expire hosts), the
//! remaining hosts are reported `unreachable` and the stream ends: the caller is never left
//! waiting forever.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use op_proto::invoke::{
    HostStatus, InvocationAccepted, InvocationEvent, NDJSON, Progress, Summary,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::results;
use crate::app::App;

/// A `progress` line goes out when nothing else was written for this long.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Added to the longest deadline before the stream stops waiting for a manager that does not
/// settle hosts any more.
const STALL_GRACE: Duration = Duration::from_secs(30);
/// Lines buffered for a slow reader; the writer waits beyond that.
const BUFFER: usize = 64;

/// Header naming the invocation of a streamed answer.
pub const INVOCATION_HEADER: &str = "x-op-invocation-id";

/// Starts following the invocation and returns the streaming response. `started` is when the
/// request arrived (the summary's `elapsed_ms` counts from there).
pub fn respond(app: Arc<App>, accepted: InvocationAccepted, started: Instant) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    let id = accepted.invocation_id;
    tokio::spawn(follow(app, accepted, started, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    }));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    // Intermediaries must pass each line on as it comes.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(INVOCATION_HEADER, v);
    }
    resp
}

/// Writes one event as a line; false when the caller has gone.
async fn send(tx: &mpsc::Sender<Bytes>, event: &InvocationEvent) -> bool {
    let mut line = match serde_json::to_vec(event) {
        Ok(l) => l,
        Err(_) => return true,
    };
    line.push(b'\n');
    tx.send(Bytes::from(line)).await.is_ok()
}

/// Decrements the open-streams gauge however the stream ends.
struct Open<'a>(&'a App);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.metrics.invocation_streams.dec();
    }
}

async fn follow(
    app: Arc<App>,
    accepted: InvocationAccepted,
    started: Instant,
    tx: mpsc::Sender<Bytes>,
) {
    app.metrics.invocation_streams.inc();
    let _open = Open(&app);
    let id = accepted.invocation_id;
    if !send(&tx, &InvocationEvent::Accepted(accepted)).await {
        return;
    }
    let mut changes = app.hub.subscribe_invocations();
    let mut emitted: HashSet<Uuid> = HashSet::new();
    // The log index up to which settled hosts were written out.
    let mut after: u64 = 0;
    let mut first = true;
    let mut last_sent = Instant::now();
    let mut last_change = Instant::now();
    loop {
        changes.borrow_and_update();
        // Only the hosts that settled since the last look: the cost of a look follows what
        // changed, not the number of hosts (a fleet-wide exec has thousands).
        let read = app.read(move |s| s.invocation_progress(id, after)).await;
        let Ok(Some((row, settled, open))) = read else {
            // The invocation vanished (a snapshot from a lagging member?) or the store failed:
            // end the stream; the caller sees no summary and can ask GET /v1/invocations/ID.
            tracing::warn!(invocation = %id, "invocation stream: cannot read the invocation");
            return;
        };
        if first {
            first = false;
            for m in &row.detail.unreachable {
                let event = InvocationEvent::Result(Box::new(results::missing(m)));
                if !send(&tx, &event).await {
                    return;
                }
            }
            last_sent = Instant::now();
        }
        for t in &settled {
            after = after.max(t.settled_index.unwrap_or(0));
            if !emitted.insert(t.run_id) {
                continue;
            }
            let event = InvocationEvent::Result(Box::new(results::host(t)));
            if !send(&tx, &event).await {
                return;
            }
            last_sent = Instant::now();
            last_change = last_sent;
        }
        if open == 0 {
            let all = app.read(move |s| s.invocation(id, false)).await;
            let Ok(Some((row, targets))) = all else {
                return;
            };
            let mut summary = row.summary(&targets);
            summary.elapsed_ms = started.elapsed().as_millis() as u64;
            send(&tx, &InvocationEvent::Summary(summary)).await;
            return;
        }
        let options = &row.detail.options;
        let stall_limit =
            Duration::from_secs(options.deadline_secs + options.batch_wait_secs) + STALL_GRACE;
        let idle = PROGRESS_EVERY.saturating_sub(last_sent.elapsed());
        if last_change.elapsed() >= stall_limit || idle.is_zero() {
            let all = app.read(move |s| s.invocation(id, false)).await;
            let Ok(Some((row, targets))) = all else {
                return;
            };
            if last_change.elapsed() >= stall_limit {
                give_up(&tx, &row, &targets, &emitted, started).await;
                return;
            }
            let count = |st: HostStatus| targets.iter().filter(|t| t.status == st).count() as u32;
            // Named, so a caller waiting on one stopped host can tell which.
            let awaiting = [HostStatus::Running, HostStatus::Pending]
                .iter()
                .flat_map(|st| targets.iter().filter(move |t| t.status == *st))
                .take(Progress::AWAITING_MAX)
                .map(|t| t.hostname.clone())
                .collect();
            let progress = Progress {
                invocation_id: id,
                done: emitted.len() as u32 + row.detail.unreachable.len() as u32,
                running: count(HostStatus::Running),
                pending: count(HostStatus::Pending),
                awaiting,
            };
            if !send(&tx, &InvocationEvent::Progress(progress)).await {
                return;
            }
            last_sent = Instant::now();
            continue;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                last_change = Instant::now();
            }
            _ = tokio::time::sleep(idle) => {}
            _ = app.shutdown.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

/// Reports every host not yet final as `unreachable` and ends with the summary.
async fn give_up(
    tx: &mpsc::Sender<Bytes>,
    row: &op_store::InvocationRow,
    targets: &[op_store::TargetRow],
    emitted: &HashSet<Uuid>,
    started: Instant,
) {
    tracing::warn!(invocation = %row.id, "invocation stream: hosts were not settled in time; reporting them unreachable");
    let mut statuses: Vec<HostStatus> = vec![HostStatus::Unreachable; row.detail.unreachable.len()];
    for t in targets {
        if t.status.is_final() {
            statuses.push(t.status);
            continue;
        }
        statuses.push(HostStatus::Unreachable);
        if emitted.contains(&t.run_id) {
            continue;
        }
        let mut r = results::host(t);
        r.status = HostStatus::Unreachable;
        r.error = Some(format!(
            "the manager did not settle this host in time (is there a raft leader?); see \
             GET /v1/invocations/{} later",
            row.id
        ));
        if !send(tx, &InvocationEvent::Result(Box::new(r))).await {
            return;
        }
    }
    let mut summary = Summary::count(row.id, &row.job, statuses);
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.stopped = row.stopped.clone();
    send(tx, &InvocationEvent::Summary(summary)).await;
}
