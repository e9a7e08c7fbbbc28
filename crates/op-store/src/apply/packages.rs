//! Package commands: a new version (with its deterministic version number and inherited deploy
//! dir), rollback of the current version, and deletion of a version nobody uses.
//!
//! Only metadata lives here; blob files are the manager's business. Every change of a package's
//! current version changes every node's desired state.

use chrono::{DateTime, Utc};
use op_proto::HostSelector;
use op_proto::NodeStatus;
use op_proto::package::{
    describe_target, is_everywhere, normalize_deploy_dir, validate_deploy_dir,
    validate_package_name, validate_target_label,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Changes, Outcome, audit, bump_desired_all};
use crate::codec::ms;
use crate::command::{CommandResult, Rejection};
use crate::read;

/// True for a lowercase hex SHA-256.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn add(
    conn: &Connection,
    index: u64,
    name: &str,
    sha256: &str,
    size: u64,
    deploy_dir: Option<&str>,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
    target: &HostSelector,
) -> Outcome {
    if let Err(e) = validate_package_name(name) {
        return Ok(Err(Rejection::invalid(format!(
            "package name {name:?} {e}"
        ))));
    }
    for (k, v) in &target.labels {
        if let Err(e) = validate_target_label(k, v) {
            return Ok(Err(Rejection::invalid(format!("target {e}"))));
        }
    }
    if !is_sha256(sha256) {
        return Ok(Err(Rejection::invalid(
            "sha256 must be 64 lowercase hex digits",
        )));
    }
    if let Some(Err(e)) = deploy_dir.map(validate_deploy_dir) {
        return Ok(Err(Rejection::invalid(format!("deploy dir {e}"))));
    }
    let last: Option<u64> = conn
        .query_row(
            "SELECT last_version FROM packages WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|v| v as u64);
    // Versions read like the seed's (unix seconds of the upload) yet strictly increase even for
    // two uploads within one second or a clock that went back.
    let version = last.map_or(0, |v| v + 1).max(at.timestamp().max(0) as u64);
    let deploy_dir = match deploy_dir {
        Some(d) => normalize_deploy_dir(d),
        // The seed meant to reuse the package's last deploy dir (its lookup was broken).
        None => conn
            .query_row(
                "SELECT deploy_dir FROM package_versions WHERE name = ?1
                 ORDER BY version DESC LIMIT 1",
                [name],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .unwrap_or_default(),
    };
    // The targeting is the version's own: "" = every host (what a version without one means).
    let target_json = if is_everywhere(target) {
        String::new()
    } else {
        serde_json::to_string(target).map_err(|source| crate::StoreError::Corrupt {
            what: "package target",
            source,
        })?
    };
    conn.execute(
        "INSERT INTO package_versions(name, version, sha256, size, deploy_dir, uploaded_at, uploader,
                                      target)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            name,
            version as i64,
            sha256,
            size as i64,
            deploy_dir,
            ms(at),
            actor,
            target_json
        ],
    )?;
    conn.execute(
        "INSERT INTO packages(name, current, last_version) VALUES (?1, ?2, ?2)
         ON CONFLICT(name) DO UPDATE SET current = excluded.current,
           last_version = excluded.last_version",
        params![name, version as i64],
    )?;
    audit(
        conn,
        at,
        actor,
        "package.upload",
        name,
        &if is_everywhere(target) {
            format!("version {version} sha256 {sha256} size {size}")
        } else {
            format!(
                "version {version} sha256 {sha256} size {size} target {}",
                describe_target(target)
            )
        },
    )?;
    ch.blobs_added = true;
    bump_desired_all(conn, index, ch)?;
    let stored = read::packages::version(conn, name, version)?;
    Ok(stored
        .map(|v| CommandResult::Package {
            version: Box::new(v),
        })
        .ok_or_else(|| Rejection::invalid("the version just written cannot be read")))
}

pub(super) fn rollback(
    conn: &Connection,
    index: u64,
    name: &str,
    version: Option<u64>,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some(current) = read::packages::current_version(conn, name)? else {
        return Ok(Err(Rejection::not_found(format!(
            "no package named {name:?}"
        ))));
    };
    let target = match version {
        Some(v) => v,
        None => match conn
            .query_row(
                "SELECT MAX(version) FROM package_versions WHERE name = ?1 AND version < ?2",
                params![name, current as i64],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(|v| v as u64)
        {
            Some(v) => v,
            None => {
                return Ok(Err(Rejection::conflict(format!(
                    "{name} has no version older than the current one ({current}) to roll back to"
                ))));
            }
        },
    };
    let Some(mut target_row) = read::packages::version(conn, name, target)? else {
        return Ok(Err(Rejection::not_found(format!(
            "{name} has no version {target}; see `agentcli get packages {name}`"
        ))));
    };
    if target != current {
        conn.execute(
            "UPDATE packages SET current = ?2 WHERE name = ?1",
            params![name, target as i64],
        )?;
        audit(
            conn,
            at,
            actor,
            "package.rollback",
            name,
            &format!("version {current} -> {target}"),
        )?;
        bump_desired_all(conn, index, ch)?;
    }
    target_row.current = true;
    Ok(Ok(CommandResult::Package {
        version: Box::new(target_row),
    }))
}

pub(super) fn delete(
    conn: &Connection,
    name: &str,
    version: u64,
    at: DateTime<Utc>,
    actor: &str,
    ch: &mut Changes,
) -> Outcome {
    let Some(row) = read::packages::version(conn, name, version)? else {
        return Ok(Err(Rejection::not_found(format!(
            "{name} has no version {version}"
        ))));
    };
    if row.current {
        return Ok(Err(Rejection::conflict(format!(
            "{name} {version} is the current version; roll back or upload another version first"
        ))));
    }
    let users: Vec<String> = read::nodes::all(conn)?
        .into_iter()
        .filter(|n| n.status != NodeStatus::Left)
        .filter(|n| {
            n.packages
                .iter()
                .any(|p| p.name == name && p.version == version)
        })
        .map(|n| n.hostname)
        .collect();
    if !users.is_empty() {
        return Ok(Err(Rejection::conflict(format!(
            "{name} {version} is still installed on {} host(s) ({}); wait until they moved on",
            users.len(),
            users.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ))));
    }
    conn.execute(
        "DELETE FROM package_versions WHERE name = ?1 AND version = ?2",
        params![name, version as i64],
    )?;
    audit(
        conn,
        at,
        actor,
        "package.delete",
        name,
        &format!("version {version} sha256 {}", row.sha256),
    )?;
    ch.blobs_released = true;
    Ok(Ok(CommandResult::PackageVersionDeleted {
        name: name.to_string(),
        version,
        sha256: row.sha256,
    }))
}
