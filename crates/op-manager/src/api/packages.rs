//! `/v1/packages`: upload (streamed to the blob store), list, versions, content download with
//! Range under the download cap, rollback, and delete of one version.
//!
//! Uploads are stored before their metadata is written: the blob is hashed while it arrives,
//! fsynced, moved to `blobs/<sha256>`, copied to a majority of the managers, and only then is
//! `AddPackageVersion` proposed, so a version the cluster knows survives the loss of any minority
//! of managers, including the one that took the upload. Downloads hold a slot of the download
//! gate for as long as the body streams; a manager that lacks the content fetches it from a peer
//! first.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use futures_util::StreamExt;
use op_proto::package::{
    PackageVersion, RollbackRequest, parse_target, validate_deploy_dir, validate_package_name,
};
use op_store::{Command, CommandResult};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::error::ApiError;
use super::extract::{ApiBytes, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::blobs::{ReceiveError, Staged, replicate};
use crate::downloads::RETRY_AFTER_SECS;

/// Size of the chunks a download is sent in.
const CHUNK: usize = 256 << 10;

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_package_name(name)
        .map_err(|e| ApiError::bad("invalid_name", format!("package name {name:?} {e}")))
}

fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad(
            "invalid_version",
            format!("{text:?} is not a package version (a whole number)"),
        )
    })
}

fn answer(result: CommandResult, what: &str) -> Result<PackageVersion, ApiError> {
    match result {
        CommandResult::Package { version } => Ok(*version),
        _ => Err(ApiError::Internal(format!("unexpected answer to {what}"))),
    }
}

/// The query of an upload: `deploy_dir` (absent: inherit the package's last deploy dir; empty:
/// the agent's default) and the version's targeting, each repeatable: `host`, `exclude` (host
/// entries of the `WhiteHosts`/`BlackHosts` grammar, comma-separated allowed) and `label`
/// (`KEY=VALUE`). No targeting: every host.
#[derive(Debug, Default, PartialEq)]
pub struct UploadQuery {
    deploy_dir: Option<String>,
    target: op_proto::HostSelector,
    /// A staged rollout of this version (issue 21; see `super::rollouts::RolloutQuery`).
    rollout: Option<String>,
    step_wait: Option<String>,
    halt_on: Option<String>,
    auto_rollback: Option<bool>,
}

impl UploadQuery {
    /// Reads the pairs of the query string; an unknown key or a bad entry is a 400 naming it.
    pub fn parse(pairs: Vec<(String, String)>) -> Result<UploadQuery, ApiError> {
        let (mut hosts, mut exclude, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        let mut q = UploadQuery::default();
        for (key, value) in pairs {
            match key.as_str() {
                "deploy_dir" => q.deploy_dir = Some(value),
                "host" => hosts.push(value),
                "exclude" => exclude.push(value),
                "label" => labels.push(value),
                "rollout" => q.rollout = Some(value),
                "step_wait" => q.step_wait = Some(value),
                "halt_on" => q.halt_on = Some(value),
                "auto_rollback" => {
                    q.auto_rollback = Some(match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(ApiError::bad(
                                "invalid_query",
                                format!("auto_rollback={other:?}: expected true or false"),
                            ));
                        }
                    })
                }
                other => {
                    return Err(ApiError::bad(
                        "invalid_query",
                        format!(
                            "unknown query parameter {other:?}; an upload takes deploy_dir, host, exclude, label, rollout, step_wait, halt_on and auto_rollback"
                        ),
                    ));
                }
            }
        }
        q.target = parse_target(&hosts, &exclude, &labels)
            .map_err(|e| ApiError::bad("invalid_target", e))?;
        Ok(q)
    }
}

/// Receives an upload's body into a staged blob (hashed as it arrives), under the upload size
/// limit and the idle timeout. A refused body leaves nothing: the staged file is removed when
/// dropped. Shared by package uploads and agent releases.
pub(super) async fn receive_body(app: &App, req: Request) -> Result<Staged, ApiError> {
    app.blobs
        .receive(
            req.into_body().into_data_stream(),
            app.config.upload_max_bytes,
            app.config.header_read_timeout,
        )
        .await
        .map_err(|e| match e {
            ReceiveError::TooLarge { limit } => ApiError::PayloadTooLarge {
                limit: limit as usize,
            },
            ReceiveError::Idle { secs } => ApiError::BodyTimeout { secs },
            ReceiveError::Body(m) => ApiError::bad("invalid_body", m),
            ReceiveError::Io { .. } => ApiError::Internal(e.to_string()),
        })
}

pub async fn upload(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
    req: Request,
) -> Result<(StatusCode, Json<PackageVersion>), ApiError> {
    check_name(&name)?;
    if op_proto::agent_upgrade::is_reserved(&name) {
        return Err(ApiError::bad(
            "reserved_name",
            format!(
                "{name} is an agent release name: upload agent releases with agentcli agent upgrade start"
            ),
        ));
    }
    let q = UploadQuery::parse(pairs)?;
    // A policy token limited to some hosts uploads only versions targeted within them, judged
    // from the targeting's text as a job's selection is (an untargeted version reaches every
    // host, so it is refused).
    if let Some(policy) = &caller.policy {
        policy.confines(&q.target).map_err(|e| {
            ApiError::Denied(format!(
                "token {:?} may not upload package {name:?}: {}",
                caller.name,
                e.replacen("the job selects", "the version goes to", 1)
                    .replacen("WhiteHosts entry", "--host entry", 1)
            ))
        })?;
    }
    if let Some(dir) = &q.deploy_dir {
        validate_deploy_dir(dir)
            .map_err(|e| ApiError::bad("invalid_deploy_dir", format!("deploy dir {e}")))?;
    }
    // Checked before the body is read: a bad rollout changes nothing. Without one, the
    // package's default rollout stages the upload.
    let rollout = super::rollouts::for_upload(
        &app,
        &name,
        super::rollouts::RolloutQuery {
            rollout: q.rollout.clone(),
            step_wait: q.step_wait.clone(),
            halt_on: q.halt_on.clone(),
            auto_rollback: q.auto_rollback,
        },
    )
    .await?;
    let staged = receive_body(&app, req).await?;
    // From the rename until the version is applied, GC must not judge this blob.
    let _commit = app.blobs.commit_guard().await;
    let received = app
        .blobs
        .commit(staged)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    replicate::push_to_majority(&app.replicas(), &received.sha256).await?;
    let result = app
        .write(super::rollouts::staged(
            Command::AddPackageVersion {
                name,
                sha256: received.sha256,
                size: received.size,
                deploy_dir: q.deploy_dir,
                at: Utc::now(),
                actor: caller.name,
                target: q.target,
            },
            rollout,
        ))
        .await?;
    let version = answer(result, "AddPackageVersion")?;
    app.metrics.uploads.inc();
    app.metrics.upload_bytes.inc_by(version.size);
    Ok((StatusCode::CREATED, Json(version)))
}

pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<PackageVersion>>, ApiError> {
    Ok(Json(app.read(|s| s.packages()).await?))
}

pub async fn versions(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<PackageVersion>>, ApiError> {
    check_name(&name)?;
    let n = name.clone();
    let versions = app.read(move |s| s.package_versions(&n)).await?;
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("no package named {name:?}")));
    }
    Ok(Json(versions))
}

pub(super) async fn load(
    app: &App,
    name: String,
    version: &str,
) -> Result<PackageVersion, ApiError> {
    check_name(&name)?;
    let version = parse_version(version)?;
    let n = name.clone();
    app.read(move |s| s.package_version(&n, version))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{name} has no version {version}")))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PackageVersion>, ApiError> {
    Ok(Json(load(&app, name, &version).await?))
}

/// A `Range` header, read against a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send everything (also for multi-range requests, which RFC 9110 lets a
    /// server ignore).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A valid range that starts at or beyond the end.
    Unsatisfiable,
}

pub fn parse_range(value: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return ByteRange::Unsatisfiable,
            Ok(_) if size == 0 => return ByteRange::Unsatisfiable,
            Ok(n) => Some((size.saturating_sub(n), size - 1)),
            Err(_) => None,
        },
        // bytes=A-: from A to the end.
        (false, true) => a.parse::<u64>().ok().map(|s| (s, size.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(size.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => ByteRange::Full,
        Some((start, _)) if start >= size => ByteRange::Unsatisfiable,
        Some((start, end)) => ByteRange::Part { start, end },
    }
}

pub async fn content(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let v = load(&app, name, &version).await?;
    let permit = app.downloads.try_enter().ok_or(ApiError::TooManyRequests {
        retry_after_secs: RETRY_AFTER_SECS,
    })?;
    let path = replicate::ensure_local(&app.replicas(), &v.sha256)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!(
                "the content of {} {} is not on this manager and no other manager could send it: {e}",
                v.name, v.version
            ))
        })?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    // Serve what is on disk; a damaged blob is caught by the downloader's sha256 check.
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
        .len();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|h| h.to_str().ok()),
        size,
    );
    let (status, start, len) = match range {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    }
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file.take(len), CHUNK).then(move |chunk| {
            // The permit lives as long as the body: a finished or dropped download frees it.
            let rate = permit.rate();
            if let Ok(bytes) = &chunk {
                permit.sent(bytes.len() as u64);
            }
            async move {
                if let (Some(rate), Ok(bytes)) = (rate, &chunk) {
                    rate.take(bytes.len() as u64).await;
                }
                chunk
            }
        });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", v.sha256)) {
        h.insert(header::ETAG, etag);
    }
    if let Ok(sha) = HeaderValue::from_str(&v.sha256) {
        h.insert("x-op-sha256", sha);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(cr) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, cr);
    }
    Ok(resp)
}

pub async fn rollback(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<PackageVersion>, ApiError> {
    check_name(&name)?;
    super::guard::check_own_package(&app, &caller, &name).await?;
    // An empty body asks for the previous version.
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad(
                "invalid_body",
                format!("expected {{\"version\": N}} or an empty body: {e}"),
            )
        })?
    };
    let result = app
        .write(Command::RollbackPackage {
            name,
            version: req.version,
            at: Utc::now(),
            actor: caller.name,
        })
        .await?;
    Ok(Json(answer(result, "RollbackPackage")?))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    check_name(&name)?;
    let version = parse_version(&version)?;
    super::guard::check_own_package(&app, &caller, &name).await?;
    let fresh = app.beats.reporting_installed(&name, version);
    if fresh > 0 {
        return Err(ApiError::Conflict(format!(
            "{name} {version} is still installed on {fresh} host(s); wait until they moved on"
        )));
    }
    app.write(Command::DeletePackageVersion {
        name,
        version,
        at: Utc::now(),
        actor: caller.name,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_queries() {
        let q = |pairs: &[(&str, &str)]| {
            UploadQuery::parse(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(q(&[]).unwrap(), UploadQuery::default());
        let got = q(&[
            ("deploy_dir", "/opt"),
            ("host", "db-*"),
            ("host", "10.0.0.5"),
            ("exclude", "db-3"),
            ("label", "role=db"),
        ])
        .unwrap();
        assert_eq!(got.deploy_dir.as_deref(), Some("/opt"));
        assert_eq!(
            op_proto::package::describe_target(&got.target),
            "host db-*,10.0.0.5 exclude db-3 label role=db"
        );
        for bad in [
            ("label", "role"),
            ("host", "10.0.0.999"),
            ("exclude", "fact.cpus>=x"),
            ("labels", "a=b"),
        ] {
            let Err(ApiError::BadRequest { code, message }) = q(&[bad]) else {
                panic!("{bad:?} was accepted");
            };
            assert!(
                code == "invalid_target" || code == "invalid_query",
                "{code}"
            );
            assert!(message.contains(bad.0), "{message}");
        }
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(r("bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=90-500"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-500"), Part { start: 0, end: 99 });
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=5-1"), Full);
        assert_eq!(r("bytes=0-1,5-6"), Full);
        assert_eq!(r("items=0-1"), Full);
        assert_eq!(r("bytes=x-"), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
