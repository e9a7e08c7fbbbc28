//! Request extractors whose rejections are [`ApiError`]s, so a malformed body or query gets the
//! same `{code, message}` shape as every other error (axum's own rejections are plain text).
//!
//! Bodies are read here frame by frame with an idle timeout: a client that declares a body and
//! stops sending gets a 408 instead of holding the request forever, and the size limit is
//! enforced while reading.
//!
//! [`UnreadBody`] finishes what a refusal left unread: over HTTP/2 an answer sent before the
//! request body arrived ends the stream with a reset, which some clients report instead of the
//! answer (curl 7.88: "Stream error in the HTTP/2 framing layer").

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::Version;
use axum::http::request::Parts;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The body limit and idle timeout in force on a route (set by the router).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub bytes: usize,
    pub idle: Duration,
}

impl Default for BodyLimit {
    fn default() -> Self {
        BodyLimit {
            bytes: 1 << 20,
            idle: Duration::from_secs(30),
        }
    }
}

/// Reads the whole body, at most `limit.bytes`, waiting at most `limit.idle` for each frame.
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .copied()
        .unwrap_or_default();
    let mut body = req.into_body().into_data_stream();
    let mut buf = bytes::BytesMut::new();
    loop {
        let data = match tokio::time::timeout(limit.idle, body.next()).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout {
                    secs: limit.idle.as_secs(),
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad(
                    "invalid_body",
                    format!("reading the body: {e}"),
                ));
            }
            Ok(Some(Ok(data))) => data,
        };
        if buf.len() + data.len() > limit.bytes {
            return Err(ApiError::PayloadTooLarge { limit: limit.bytes });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req).await?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof => {
                    ApiError::bad("malformed_json", format!("the body is not valid JSON: {e}"))
                }
                Category::Data | Category::Io => {
                    ApiError::bad("invalid_body", format!("the body does not fit: {e}"))
                }
            }
        })
    }
}

/// A raw body (the job PUT takes the task file as written).
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        read_body(req).await.map(ApiBytes)
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r: QueryRejection| ApiError::bad("invalid_query", r.body_text()))
    }
}

/// Answers 413 at once when the declared `Content-Length` exceeds `limit`, before any of the body
/// is read.
pub async fn reject_declared_oversize(
    limit: usize,
    req: Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(next.run(req).await)
}

/// What a refused client may still send after its answer is ready (see [`UnreadBody`]).
const DRAIN_MAX_BYTES: usize = 16 << 20;

/// The part of an HTTP/2 request body that the handler (or the guard, refusing) did not read.
///
/// An HTTP/2 stream whose answer ends while the request body is still arriving can only be closed
/// with `RST_STREAM`. RFC 9113 section 8.1 allows that (with NO_ERROR, which h2 sends), but a
/// client that is still uploading may take the reset as a failure and drop the answer: curl 7.88
/// does, so a viewer's `PUT` of a 2 MB job got "(92) Stream error" instead of its 403. Reading
/// the rest of the body before answering closes the stream normally, so every refusal reaches
/// the client as its status and body. The read is bounded by [`DRAIN_MAX_BYTES`] and the idle
/// timeout; past either, the stream is reset as before (conforming clients keep the answer).
/// HTTP/1.1 needs none of this: hyper closes the connection after an early answer, which clients
/// handle, and reading the body would defeat `Expect: 100-continue`.
pub(crate) struct UnreadBody(Option<Arc<Mutex<Option<BodyDataStream>>>>);

impl UnreadBody {
    /// Wraps an HTTP/2 request's body so that whatever is left of it when it is dropped can be
    /// drained by [`UnreadBody::drain`]; other versions pass through untouched.
    pub(crate) fn track(req: Request) -> (Request, UnreadBody) {
        if req.version() != Version::HTTP_2 {
            return (req, UnreadBody(None));
        }
        let slot = Arc::new(Mutex::new(None));
        let (parts, body) = req.into_parts();
        let tracked = Tracked {
            inner: Some(body.into_data_stream()),
            ended: false,
            slot: slot.clone(),
        };
        (
            Request::from_parts(parts, Body::from_stream(tracked)),
            UnreadBody(Some(slot)),
        )
    }

    /// Reads and discards what the request left unread, at most [`DRAIN_MAX_BYTES`], waiting at
    /// most `idle` for each frame. Call it once the answer is ready, before returning it.
    pub(crate) async fn drain(self, idle: Duration) {
        let Some(slot) = self.0 else { return };
        let rest = slot.lock().map(|mut s| s.take()).unwrap_or(None);
        let Some(mut rest) = rest else { return };
        let mut read = 0;
        while read <= DRAIN_MAX_BYTES {
            match tokio::time::timeout(idle, rest.next()).await {
                Ok(Some(Ok(data))) => read += data.len(),
                _ => return,
            }
        }
    }
}

/// A request body that hands its unread rest to [`UnreadBody`] when dropped.
struct Tracked {
    inner: Option<BodyDataStream>,
    ended: bool,
    slot: Arc<Mutex<Option<BodyDataStream>>>,
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        next
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && !self.ended
            && !inner.is_end_stream()
            && let Ok(mut slot) = self.slot.lock()
        {
            *slot = Some(inner);
        }
    }
}
