//! `GET /v1/events` (issue 19): the derived events as an NDJSON stream, read one at a time.

use op_proto::events::Event;
use reqwest::Method;

use crate::{API_VERSION, API_VERSION_HEADER, Client, ClientError, Ndjson, Result};

/// What `GET /v1/events` is asked for.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events with a greater id (0: every kept event).
    pub after: u64,
    /// Keep the stream open and receive new events as they are applied.
    pub follow: bool,
    /// Only these kinds (any of them); empty: every kind.
    pub kinds: Vec<String>,
    /// Only events about these jobs (any of them); empty: every job.
    pub jobs: Vec<String>,
}

impl Client {
    /// The events after `q.after`, oldest first; with `q.follow` the stream stays open.
    pub async fn events(&self, q: &EventQuery) -> Result<EventStream> {
        let path = "/v1/events";
        let mut pairs: Vec<(&str, String)> = vec![("after", q.after.to_string())];
        if q.follow {
            pairs.push(("follow", "true".into()));
        }
        pairs.extend(q.kinds.iter().map(|k| ("kind", k.clone())));
        pairs.extend(q.jobs.iter().map(|j| ("job", j.clone())));
        // No overall time limit: a followed stream stays open while nothing happens.
        let mut builder = self
            .http
            .request(Method::GET, self.url(path))
            .header(API_VERSION_HEADER, API_VERSION.to_string())
            .query(&pairs);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        let resp = tokio::time::timeout(self.timeout, self.send(path, builder))
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.url(path),
                secs: self.timeout.as_secs(),
            })??;
        Ok(EventStream(Ndjson::new(resp, self.url(path), None)))
    }
}

/// The NDJSON answer of `GET /v1/events`.
#[derive(Debug)]
pub struct EventStream(Ndjson);

impl EventStream {
    /// The next event; `None` once the manager ended the stream.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        self.0.next().await
    }
}
