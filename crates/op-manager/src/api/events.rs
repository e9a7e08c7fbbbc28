//! `GET /v1/events?after=ID&follow=true&kind=K&job=J`: the derived events (issue 19) as NDJSON,
//! one [`Event`] per line, oldest first. `kind` and `job` may repeat (any of them matches).
//! Without `follow` the answer ends after the kept events; with it the stream stays open and
//! writes each new event as it is applied, woken by the hub's event channel, until the caller
//! goes away or the manager shuts down. A caller resumes with `after` = the last id it saw.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use op_proto::events::{Event, EventKind};
use op_proto::invoke::NDJSON;
use op_store::MAX_EVENT_PAGE;
use tokio::sync::mpsc;

use super::ApiError;
use super::extract::ApiQuery;
use crate::app::App;
use crate::auth::Caller;

/// Lines buffered for a slow reader; the writer waits beyond that.
const BUFFER: usize = 64;

/// What the caller asked for.
#[derive(Debug, Default)]
struct Filter {
    after: u64,
    follow: bool,
    kinds: BTreeSet<String>,
    jobs: BTreeSet<String>,
    /// The caller's token policy: only events of its jobs (none without a job).
    policy: Option<Arc<op_proto::policy::Policy>>,
}

impl Filter {
    fn parse(pairs: Vec<(String, String)>) -> Result<Filter, ApiError> {
        let mut f = Filter::default();
        for (key, value) in pairs {
            match key.as_str() {
                "after" => {
                    f.after = value.parse().map_err(|_| {
                        ApiError::bad(
                            "invalid_query",
                            format!("after={value:?} is not an event id"),
                        )
                    })?
                }
                "follow" => {
                    f.follow = value.parse().map_err(|_| {
                        ApiError::bad("invalid_query", "follow must be true or false")
                    })?
                }
                "kind" => {
                    if !EventKind::parse(&value).is_known() {
                        let known: Vec<&str> =
                            EventKind::KNOWN.iter().map(EventKind::as_str).collect();
                        return Err(ApiError::bad(
                            "invalid_query",
                            format!("unknown event kind {value:?}; known: {}", known.join(", ")),
                        ));
                    }
                    f.kinds.insert(value);
                }
                "job" => {
                    f.jobs.insert(value);
                }
                other => {
                    return Err(ApiError::bad(
                        "invalid_query",
                        format!("unknown parameter {other:?}; expected after, follow, kind, job"),
                    ));
                }
            }
        }
        Ok(f)
    }

    fn matches(&self, e: &Event) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| !p.restricts_jobs() || e.job.as_ref().is_some_and(|j| p.sees_job(j)))
            && (self.kinds.is_empty() || self.kinds.contains(e.kind.as_str()))
            && (self.jobs.is_empty() || e.job.as_ref().is_some_and(|j| self.jobs.contains(j)))
    }
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut filter = Filter::parse(pairs)?;
    filter.policy = caller.policy.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(follow(app, filter, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    }));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Writes the kept events after `filter.after`, then (following) each new one, until the caller
/// goes away or the manager shuts down.
async fn follow(app: Arc<App>, filter: Filter, tx: mpsc::Sender<Bytes>) {
    // Subscribe before the first read, so an event applied in between wakes the next one.
    let mut applied = app.hub.subscribe_events();
    let mut last = filter.after;
    loop {
        applied.borrow_and_update();
        loop {
            let page = match app
                .read(move |s| s.events_after(last, MAX_EVENT_PAGE))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "reading events failed");
                    return;
                }
            };
            let full = page.len() >= MAX_EVENT_PAGE as usize;
            for e in page {
                last = e.id;
                if !filter.matches(&e) {
                    continue;
                }
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        if !filter.follow {
            return;
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
            _ = app.shutdown.cancelled() => return,
        }
    }
}
