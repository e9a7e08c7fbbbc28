//! Linearizable reads: before an operator's read (`Access::Read` routes) is answered from this
//! member's applied state, [`Cluster::read_barrier`](crate::raft::Cluster::read_barrier) makes
//! sure that state includes every write acknowledged before the read began: the leader confirms
//! it still leads and names its commit index, and this member waits until it has applied that
//! far. `x-op-stale: 1` (or the query flag `?stale`) skips the barrier and reads whatever this
//! member has applied, which is cheaper and still works while no leader can be elected.
//!
//! Not covered, on purpose: the agent protocol (an agent syncs from the member it is connected
//! to; its next sync sees later changes), package content (immutable by hash), and `/metrics`,
//! `/v1/cluster` and `/v1/version`, which describe this member itself.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use op_proto::api::STALE_READ_HEADER;

use super::error::ApiError;
use super::guard::{Access, required_access};
use crate::app::App;

fn is_true(v: &str) -> bool {
    matches!(v.trim(), "" | "1" | "true" | "yes")
}

/// Removes a `stale` flag from the query string; true when it was set.
fn take_stale_flag(uri: &Uri) -> Option<(bool, Uri)> {
    let query = uri.query()?;
    let mut stale = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "stale" {
                stale = Some(is_true(v));
                false
            } else {
                true
            }
        })
        .collect();
    let stale = stale?;
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Some((stale, Uri::from_parts(parts).ok()?))
}

/// True for the reads that are linearizable unless the caller asks otherwise.
pub fn needs_barrier(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && required_access(method, path) == Access::Read
        && !matches!(path, "/metrics" | "/v1/cluster" | "/v1/version")
}

pub async fn linearizable(
    State(app): State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // The query flag goes either way, so route extractors never see an unknown field.
    let mut stale = req
        .headers()
        .get(STALE_READ_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_true);
    if let Some((flag, uri)) = take_stale_flag(req.uri()) {
        stale |= flag;
        *req.uri_mut() = uri;
    }
    if !stale && needs_barrier(req.method(), req.uri().path()) {
        app.cluster.read_barrier().await?;
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_flag_is_removed_from_the_query() {
        let u: Uri = "/v1/runs?job=x&stale&limit=5".parse().unwrap();
        let (stale, u) = take_stale_flag(&u).unwrap();
        assert!(stale);
        assert_eq!(u.to_string(), "/v1/runs?job=x&limit=5");
        let u: Uri = "/v1/jobs?stale=false".parse().unwrap();
        let (stale, u) = take_stale_flag(&u).unwrap();
        assert!(!stale);
        assert_eq!(u.to_string(), "/v1/jobs");
        assert!(take_stale_flag(&"/v1/jobs?x=1".parse().unwrap()).is_none());
        assert!(take_stale_flag(&"/v1/jobs".parse().unwrap()).is_none());
    }

    #[test]
    fn which_reads_wait_for_the_leader() {
        assert!(needs_barrier(&Method::GET, "/v1/jobs"));
        assert!(needs_barrier(&Method::GET, "/v1/runs"));
        assert!(!needs_barrier(&Method::PUT, "/v1/jobs/x"));
        assert!(!needs_barrier(&Method::GET, "/v1/cluster"));
        assert!(!needs_barrier(&Method::GET, "/metrics"));
        assert!(!needs_barrier(&Method::GET, "/healthz"));
        assert!(!needs_barrier(&Method::POST, "/v1/agent/sync"));
        assert!(!needs_barrier(&Method::GET, "/v1/packages/a/1/content"));
    }
}
