//! Every change the console makes is a call to the `/v1` API under the signed-in user's token:
//! on the leader, the API router is called in process (no socket, the same guard, validation
//! and audit as `agentcli`); on a follower, the request is forwarded to the leader's API URL, so
//! the console works on every cluster member. Answers (including NDJSON streams) come back as
//! they are.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use op_proto::ErrorBody;
use tower::ServiceExt;

use super::Ui;
use super::session::SessionView;
use crate::raft;

/// The body of an API call.
pub enum CallBody {
    Empty,
    Json(String),
    Text(String),
    /// A raw stream (package uploads), with its length when known.
    Stream(Body, Option<u64>),
}

/// The leader's API URL, when another member leads.
fn leader_url(ui: &Ui) -> Option<String> {
    let m = ui.app.raft.metrics().borrow().clone();
    let leader = m.current_leader?;
    if leader == m.id {
        return None;
    }
    m.membership_config
        .membership()
        .nodes()
        .find(|(id, _)| **id == leader)
        .map(|(_, n)| n.api_addr.trim_end_matches('/').to_string())
}

/// Calls `method path` on the API as the session's user.
pub async fn call(
    ui: &Arc<Ui>,
    session: &SessionView,
    method: Method,
    path_and_query: &str,
    body: CallBody,
) -> Response {
    if !raft::is_leader(&ui.app.raft)
        && let Some(leader) = leader_url(ui)
    {
        return forward(
            ui,
            session,
            method,
            &format!("{leader}{path_and_query}"),
            body,
        )
        .await;
    }
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::AUTHORIZATION, format!("Bearer {}", session.token));
    let body = match body {
        CallBody::Empty => Body::empty(),
        CallBody::Json(s) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(s)
        }
        CallBody::Text(s) => {
            req = req.header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            Body::from(s)
        }
        CallBody::Stream(b, len) => {
            req = req.header(header::CONTENT_TYPE, "application/octet-stream");
            if let Some(len) = len {
                req = req.header(header::CONTENT_LENGTH, len);
            }
            b
        }
    };
    let req = match req.body(body) {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    };
    match ui.api.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(e) => match e {},
    }
}

/// Calls `GET path` on this member's own API as the session's user (reads need no leader).
pub async fn get_here(ui: &Arc<Ui>, session: &SessionView, path_and_query: &str) -> Response {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path_and_query)
        .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
        .body(Body::empty());
    match req {
        Ok(req) => match ui.api.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(e) => match e {},
        },
        Err(e) => failure(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    }
}

async fn forward(
    ui: &Ui,
    session: &SessionView,
    method: Method,
    url: &str,
    body: CallBody,
) -> Response {
    let mut req = ui.http.request(method, url).bearer_auth(&session.token);
    req = match body {
        CallBody::Empty => req,
        CallBody::Json(s) => req.header(header::CONTENT_TYPE, "application/json").body(s),
        CallBody::Text(s) => req
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(s),
        CallBody::Stream(b, len) => {
            let r = req.header(header::CONTENT_TYPE, "application/octet-stream");
            let r = match len {
                Some(len) => r.header(header::CONTENT_LENGTH, len),
                None => r,
            };
            r.body(reqwest::Body::wrap_stream(b.into_data_stream()))
        }
    };
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
            let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
            *out.status_mut() = status;
            if let Some(c) = ctype {
                out.headers_mut().insert(header::CONTENT_TYPE, c);
            }
            out
        }
        Err(e) => failure(
            StatusCode::BAD_GATEWAY,
            &format!("could not reach the leader at {url}: {e}"),
        ),
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(ErrorBody::new("console", message))).into_response()
}

/// Reads a whole (small) API answer: its status and body text.
pub async fn read(resp: Response) -> (StatusCode, String) {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    (status, body)
}

/// The message (and details) of an API error answer, for showing to the user.
pub fn error_lines(status: StatusCode, body: &str) -> Vec<String> {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) if !e.details.is_empty() => e.details,
        Ok(e) => vec![e.message],
        Err(_) => vec![format!("the manager answered {status}")],
    }
}

/// A `303 See Other` to the console page `to`.
pub fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// What a console action answers once its API call returned `resp`: back to `page` when it
/// succeeded, else an error page with the API's message.
pub async fn back_or_error(resp: Response, session: &SessionView, page: &str) -> Response {
    let (status, text) = read(resp).await;
    if status.is_success() {
        return see_other(page);
    }
    super::html::error_page(
        status,
        Some(session),
        &error_lines(status, &text).join("; "),
    )
}

/// Marks a response as not to be cached or sniffed (answers scripts read).
pub fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
