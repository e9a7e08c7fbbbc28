//! Request extractors whose rejections are [`ApiError`]s, so a malformed body or query gets the
//! same `{code, message}` shape as every other error (axum's own rejections are plain text).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The body limit in force, for the 413 message.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn limit_of(parts_limit: Option<&BodyLimit>) -> usize {
    parts_limit.map_or(0, |l| l.0)
}

/// A JSON body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = limit_of(req.extensions().get::<BodyLimit>());
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection, limit)),
        }
    }
}

fn json_rejection(r: JsonRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    match r {
        JsonRejection::JsonDataError(e) => ApiError::bad("invalid_body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad("malformed_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::bad(
            "unsupported_media_type",
            "send the body with Content-Type: application/json",
        ),
        other => ApiError::bad("invalid_body", other.body_text()),
    }
}

/// A raw body (the job PUT takes the task file as written).
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = limit_of(req.extensions().get::<BodyLimit>());
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|r: BytesRejection| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::bad("invalid_body", r.body_text())
                }
            })
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
/// is read (the extractors' own limit only trips after reading `limit` bytes, and a client that
/// declared 20 MB and stopped sending would hold the request open).
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
