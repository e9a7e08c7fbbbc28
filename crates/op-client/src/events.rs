//! `GET /v1/events` (issue 19): the derived events as an NDJSON stream, read one at a time.

use op_proto::events::Event;
use reqwest::{Method, Response};

use crate::{API_VERSION, API_VERSION_HEADER, Client, ClientError, Result};

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
        Ok(EventStream {
            resp,
            buf: Vec::new(),
            url: self.url(path),
        })
    }
}

/// The NDJSON answer of `GET /v1/events`.
#[derive(Debug)]
pub struct EventStream {
    resp: Response,
    buf: Vec<u8>,
    url: String,
}

impl EventStream {
    /// The next event; `None` once the manager ended the stream.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Decode {
                        url: self.url.clone(),
                        message: format!("{e}: {}", String::from_utf8_lossy(line)),
                    });
            }
            let chunk = self.resp.chunk().await.map_err(|e| ClientError::Stream {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                // A last line without its newline.
                None => self.buf.push(b'\n'),
            }
        }
    }
}
