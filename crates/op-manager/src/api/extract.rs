//! Request extractors whose rejections are [`ApiError`]s, so a malformed body or query gets the
//! same `{code, message}` shape as every other error (axum's own rejections are plain text).
//!
//! Bodies are read here frame by frame with an idle timeout: a client that declares a body and
//! stops sending gets a 408 instead of holding the request forever, and the size limit is
//! enforced while reading.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use futures_util::StreamExt;
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
