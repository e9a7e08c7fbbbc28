//! Agent self-upgrade (issue 22), the manager's side:
//! - `PUT /v1/agents/upgrade/NAME?version=V[&deadline=D][&force=1]` stores an agent release: `NAME`
//!   must be a reserved name (`op-agent-linux-x86_64`), the body an ELF executable for that
//!   platform, and `V` not older than the newest version any agent runs (unless `force`). The
//!   declared version and deadline are committed (`SetAgentRelease`) before the package version
//!   (`AddPackageVersion`), so an agent never sees a release without them. A refused upload
//!   stores nothing.
//! - `GET /v1/agents/upgrade`: the releases, the pins, and each host's version and state.
//! - `POST /v1/agents/upgrade/pins`: pin or unpin a node or a label on a version.
//! - [`for_node`]: what a sync answer carries for the agent release (the pinned version for a
//!   pinned host, when it is still kept; else nothing new).
//!
//! Staged rollouts: an agent release is always the change of a `StartRollout` (issue 21): the
//! rollout flags (`rollout`, `step_wait`, `halt_on`, `auto_rollback`) are checked before anything
//! is kept, and without `rollout` the stages are `1,10%,100%`. A host whose new agent fails (the
//! guard restores the old one and reports the deploy failed) counts as a failure and halts it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use op_proto::NodeStatus;
use op_proto::agent_upgrade::{
    AgentPin, AgentRelease, DEFAULT_DEADLINE_SECS, HostUpgrade, PinRequest, ReleaseView,
    UpgradeStarted, UpgradeStatus, check_elf, compare_versions, platform_of, validate_version,
};
use op_proto::package::{PackageRef, PackageState, PackageVersion};
use op_store::{Command, CommandResult};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use crate::app::App;
use crate::auth::Caller;
use crate::blobs::replicate;

/// The longest watchdog deadline a release may ask for.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartQuery {
    version: String,
    /// Seconds or a duration (`2m`); default 2 minutes.
    deadline: Option<String>,
    #[serde(default)]
    force: Option<String>,
    /// Rollout flags (issue 21); without `rollout` the stages are [`DEFAULT_STAGES`].
    rollout: Option<String>,
    step_wait: Option<String>,
    halt_on: Option<String>,
    auto_rollback: Option<String>,
}

/// The stages of an agent release that names none: one host, a tenth, then every host.
const DEFAULT_STAGES: &str = "1,10%,100%";

fn truthy(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("1" | "true" | "yes"))
}

/// The newest agent version any live node reports ("" when none).
async fn newest_running(app: &App) -> Result<String, ApiError> {
    let mut nodes = app.read(|s| s.nodes()).await?;
    app.beats.overlay(&mut nodes);
    Ok(nodes
        .into_iter()
        .filter(|n| n.status != NodeStatus::Left && !n.agent_version.is_empty())
        .map(|n| n.agent_version)
        .max_by(|a, b| compare_versions(a, b))
        .unwrap_or_default())
}

pub async fn start(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<StartQuery>,
    req: Request,
) -> Result<(StatusCode, Json<UpgradeStarted>), ApiError> {
    // The body is read before anything is judged: a refusal sent while a large upload is still
    // arriving would reach the client as a broken pipe instead of its reason. A refused upload
    // leaves nothing (the staged file is removed when dropped).
    let staged = super::packages::receive_body(&app, req).await?;
    // A release goes to every agent of its platform.
    caller.check_fleet_wide("every agent of the fleet")?;
    let Some((_, arch)) = platform_of(&name) else {
        return Err(ApiError::bad(
            "invalid_name",
            format!(
                "{name:?} is not an agent release name; use one of {}",
                op_proto::agent_upgrade::PLATFORMS
                    .iter()
                    .map(|(os, arch)| op_proto::agent_upgrade::package_name(os, arch))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    validate_version(&q.version).map_err(|e| ApiError::bad("invalid_version", e))?;
    let deadline = match q.deadline.as_deref().map(str::trim) {
        None | Some("") => Duration::from_secs(DEFAULT_DEADLINE_SECS),
        Some(t) => op_proto::units::parse_duration(t).map_err(|_| {
            ApiError::bad(
                "invalid_deadline",
                format!("deadline {t:?}: expected seconds or a duration, e.g. 2m"),
            )
        })?,
    };
    if deadline < Duration::from_secs(1) || deadline > MAX_DEADLINE {
        return Err(ApiError::bad(
            "invalid_deadline",
            "the deadline must be between 1 s and 24 h",
        ));
    }
    // An agent release always goes out staged (default stages 1,10%,100%, the rollout's own
    // defaults for the rest); a bad plan is refused before anything is kept.
    let rollout = super::rollouts::checked(
        super::rollouts::RolloutQuery {
            rollout: Some(
                q.rollout
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_STAGES.to_string()),
            ),
            step_wait: q.step_wait.clone(),
            halt_on: q.halt_on.clone(),
            auto_rollback: Some(truthy(q.auto_rollback.as_deref())),
        }
        .request()?,
    )?;
    let rollout_id = rollout.as_ref().map(|r| r.id.to_string());
    let forced = truthy(q.force.as_deref());
    let newest = newest_running(&app).await?;
    if !forced && !newest.is_empty() && compare_versions(&q.version, &newest).is_lt() {
        return Err(ApiError::Conflict(format!(
            "version {} is older than {newest}, the newest version an agent runs; pass --force to downgrade",
            q.version
        )));
    }
    // The ELF header, read before the content is kept: a refused file leaves nothing behind.
    let mut head = Vec::with_capacity(64);
    if let Some(path) = staged.path() {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
        let _ = (&mut f)
            .take(64)
            .read_to_end(&mut head)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    }
    check_elf(&head, arch).map_err(|e| {
        ApiError::bad(
            "invalid_binary",
            format!("{e}; {name} takes an op-agent binary built for linux/{arch}"),
        )
    })?;
    let _commit = app.blobs.commit_guard().await;
    let received = app
        .blobs
        .commit(staged)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    replicate::push_to_majority(&app.replicas(), &received.sha256).await?;
    let release = AgentRelease {
        version: q.version.clone(),
        deadline_secs: deadline.as_secs(),
        forced,
    };
    let at = Utc::now();
    app.write(Command::SetAgentRelease {
        sha256: received.sha256.clone(),
        release: release.clone(),
        at,
        actor: caller.name.clone(),
    })
    .await?;
    let result = app
        .write(super::rollouts::staged(
            Command::AddPackageVersion {
                name,
                sha256: received.sha256,
                size: received.size,
                deploy_dir: Some(String::new()),
                at,
                actor: caller.name,
                target: Default::default(),
            },
            rollout,
        ))
        .await?;
    let CommandResult::Package { version } = result else {
        return Err(ApiError::Internal(
            "unexpected answer to AddPackageVersion".into(),
        ));
    };
    let rollout = rollout_id;
    app.metrics.uploads.inc();
    app.metrics.upload_bytes.inc_by(version.size);
    Ok((
        StatusCode::CREATED,
        Json(UpgradeStarted {
            package: *version,
            release,
            newest_running: newest,
            rollout,
        }),
    ))
}

/// The agent release of a sync answer: the release of the reserved package in `packages`, or
/// for a pinned host the kept version of its pinned release (the package is left out when that
/// version is no longer kept: the host gets nothing new). Reads the store only when an agent
/// release exists.
pub async fn for_node(
    app: &App,
    node: Uuid,
    labels: &BTreeMap<String, String>,
    packages: &mut Vec<PackageRef>,
) -> Result<Option<AgentRelease>, ApiError> {
    let Some(pos) = packages
        .iter()
        .position(|p| op_proto::agent_upgrade::is_reserved(&p.name))
    else {
        return Ok(None);
    };
    let (releases, pins) = app
        .read(|s| Ok((s.agent_releases()?, s.agent_pins()?)))
        .await?;
    let current = packages[pos].clone();
    let Some(pin) = AgentPin::applying(&pins, node, labels) else {
        return Ok(releases.get(&current.sha256).cloned());
    };
    if releases
        .get(&current.sha256)
        .is_some_and(|r| r.version == pin.version)
    {
        return Ok(releases.get(&current.sha256).cloned());
    }
    let name = current.name.clone();
    let kept = app.read(move |s| s.package_versions(&name)).await?;
    let pinned = kept.into_iter().rev().find(|v| {
        releases
            .get(&v.sha256)
            .is_some_and(|r| r.version == pin.version)
    });
    match pinned {
        Some(v) => {
            packages[pos] = v.to_ref();
            Ok(releases.get(&v.sha256).cloned())
        }
        None => {
            packages.remove(pos);
            Ok(None)
        }
    }
}

pub async fn status(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<UpgradeStatus>, ApiError> {
    let (packages, nodes, releases, pins, rollouts) = app
        .read(|s| {
            Ok((
                s.packages()?,
                s.nodes()?,
                s.agent_releases()?,
                s.agent_pins()?,
                s.rollouts()?,
            ))
        })
        .await?;
    // The latest heartbeats (packages, versions) over the stored records, as `get nodes` shows.
    let mut nodes = nodes;
    app.beats.overlay(&mut nodes);
    // As `get nodes`: a token limited to some hosts hears of those only.
    nodes.retain(|n| caller.reaches_host(&n.identity()));
    let mut status = build_status(packages, nodes, &releases, pins);
    // The rollout of each current release (the newest, should one have been superseded).
    status.rollouts = status
        .releases
        .iter()
        .filter_map(|r| {
            rollouts
                .iter()
                .filter(|o| {
                    o.kind == op_proto::rollout::RolloutKind::Package
                        && o.subject == r.package
                        && o.version == r.package_version
                })
                .max_by_key(|o| o.created_at)
                .cloned()
        })
        .collect();
    Ok(Json(status))
}

fn build_status(
    packages: Vec<PackageVersion>,
    nodes: Vec<op_proto::NodeInfo>,
    releases: &HashMap<String, AgentRelease>,
    pins: Vec<AgentPin>,
) -> UpgradeStatus {
    let current: Vec<ReleaseView> = packages
        .into_iter()
        .filter(|p| p.current && op_proto::agent_upgrade::is_reserved(&p.name))
        .map(|p| ReleaseView {
            release: releases.get(&p.sha256).cloned(),
            package: p.name,
            package_version: p.version,
            sha256: p.sha256,
        })
        .collect();
    let hosts = nodes
        .into_iter()
        .filter(|n| n.status != NodeStatus::Left)
        .map(|n| {
            let name = op_proto::agent_upgrade::package_name(&n.os, &n.arch);
            let release = current.iter().find(|r| r.package == name);
            let labels = n.identity().labels;
            let pin = AgentPin::applying(&pins, n.node_id, &labels);
            let report = n.packages.iter().find(|p| p.name == name);
            let want = pin
                .map(|p| p.version.clone())
                .or_else(|| release.and_then(|r| r.release.as_ref().map(|r| r.version.clone())));
            let (state, error) = match (release, want, report) {
                (None, _, _) if pin.is_none() => ("no release".to_string(), None),
                (_, _, Some(r)) if r.state == PackageState::Failed => {
                    ("failed".to_string(), r.error.clone())
                }
                (_, Some(w), _) if w == n.agent_version => (
                    if pin.is_some() { "pinned" } else { "upgraded" }.to_string(),
                    None,
                ),
                (_, _, Some(r)) if r.state == PackageState::Downloading => {
                    ("downloading".to_string(), r.error.clone())
                }
                // A pin on a version no kept release declares sends nothing (the host stays as
                // it is): it is not pending, it would wait forever.
                (_, Some(w), _) if pin.is_some() && !releases.values().any(|r| r.version == w) => {
                    (format!("pinned {w} (no release of it kept)"), None)
                }
                (_, Some(w), _) => (format!("pending {w}"), None),
                _ => ("-".to_string(), None),
            };
            HostUpgrade {
                node_id: n.node_id,
                hostname: n.hostname.clone(),
                status: n.status.as_str().to_string(),
                agent_version: n.agent_version.clone(),
                state,
                error,
            }
        })
        .collect();
    UpgradeStatus {
        releases: current,
        pins,
        hosts,
        rollouts: Vec::new(),
    }
}

/// `POST /v1/agents/upgrade/pins`: pin (`version`) or unpin a node or a label.
pub async fn pin(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<PinRequest>,
) -> Result<Json<UpgradeStatus>, ApiError> {
    let target = match (&req.node, &req.label) {
        (Some(key), None) => {
            let node = super::holds::one_node(&app, key).await?;
            caller.check_node(&node)?;
            format!("node:{}", node.node_id)
        }
        (None, Some(label)) => {
            let Some((k, v)) = label
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            else {
                return Err(ApiError::bad(
                    "invalid_label",
                    format!("label {label:?}: expected k=v"),
                ));
            };
            caller.check_fleet_wide(&format!("every host labelled {k}={v}"))?;
            format!("label:{k}={v}")
        }
        _ => {
            return Err(ApiError::bad(
                "invalid_pin",
                "name a node or a label (k=v), not both",
            ));
        }
    };
    if let Some(v) = &req.version {
        validate_version(v).map_err(|e| ApiError::bad("invalid_version", e))?;
    }
    app.write(Command::SetAgentPin {
        target,
        version: req.version,
        at: Utc::now(),
        actor: caller.name.clone(),
    })
    .await?;
    status(State(app), Extension(caller)).await
}
