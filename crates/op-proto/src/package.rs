//! Packages: versioned files and archives the manager stores and every agent deploys.
//!
//! The manager keeps each upload as an immutable version (`name`, `version`, `sha256`, `size`,
//! `deploy_dir`) and one `current` version per package; agents receive the current version of
//! every package as a [`PackageRef`] in their desired state and report what they hold as
//! [`InstalledPackage`] in every heartbeat. What a name means for deployment (a plain file or an
//! archive to unpack) is decided here, by [`PackageKind::of`], so the CLI, the manager and the
//! agent can never disagree about it.
//!
//! A version may be **targeted** ([`PackageVersion::target`]): white hosts, black hosts and labels
//! with the same grammar and meaning as a job's `WhiteHosts`/`BlackHosts`/`Labels`
//! ([`crate::hosts`]). Only the nodes it matches receive it; the others are neither missing nor
//! failed for it. Targeting belongs to the version: a new upload without targeting goes to every
//! host again, whatever the previous version had.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::hosts::{HostPattern, HostSelector};

/// A version an agent must have installed: part of its desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    pub name: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    /// Empty = the agent's default deploy dir.
    #[serde(default)]
    pub deploy_dir: String,
}

/// One stored version, as listed by the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    pub name: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub deploy_dir: String,
    pub uploaded_at: DateTime<Utc>,
    #[serde(default)]
    pub uploader: String,
    /// True for the version agents converge to.
    #[serde(default)]
    pub current: bool,
    /// The hosts this version goes to (white, black, labels); empty = every host.
    #[serde(default, skip_serializing_if = "is_everywhere")]
    pub target: HostSelector,
}

/// True for a selector that selects every host (no white, black or label entry).
pub fn is_everywhere(target: &HostSelector) -> bool {
    target.white.is_empty() && target.black.is_empty() && target.labels.is_empty()
}

/// The targeting in one line, for tables: `everywhere`, or e.g.
/// `host web-*,10.0.0.0/8 exclude web-3 label role=db`.
pub fn describe_target(target: &HostSelector) -> String {
    if is_everywhere(target) {
        return "everywhere".into();
    }
    let mut parts = Vec::new();
    let list = |ps: &[HostPattern]| ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",");
    if !target.white.is_empty() {
        parts.push(format!("host {}", list(&target.white)));
    }
    if !target.black.is_empty() {
        parts.push(format!("exclude {}", list(&target.black)));
    }
    if !target.labels.is_empty() {
        let labels: Vec<String> = target
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!("label {}", labels.join(",")));
    }
    parts.join(" ")
}

/// Checks a label a package version is targeted by (`--label KEY=VALUE`): the same rules as a
/// job's `Labels` (key 1..63 of `[A-Za-z0-9._/-]`, value at most 63 characters without ',', '='
/// or control characters).
pub fn validate_target_label(key: &str, value: &str) -> Result<(), String> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !key_ok {
        return Err(format!(
            "label key {key:?} must be 1..63 of [A-Za-z0-9._/-]"
        ));
    }
    if value.len() > 63
        || value
            .chars()
            .any(|c| c.is_control() || c == ',' || c == '=')
    {
        return Err(format!(
            "label value {value:?} must be at most 63 characters without ',', '=' or control characters"
        ));
    }
    Ok(())
}

/// Builds a targeting from the texts of `--host`, `--exclude` and `--label KEY=VALUE` (each
/// entry of `hosts`/`exclude` may hold several, comma-separated), checking every entry; the error
/// names the flag and the entry.
pub fn parse_target(
    hosts: &[String],
    exclude: &[String],
    labels: &[String],
) -> Result<HostSelector, String> {
    let patterns = |texts: &[String], flag: &str| -> Result<Vec<HostPattern>, String> {
        Ok(crate::hosts::host_flag_entries(texts, flag)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    };
    let mut map = BTreeMap::new();
    for l in labels {
        let Some((k, v)) = l.split_once('=') else {
            return Err(format!("--label {l:?} is not KEY=VALUE (e.g. role=db)"));
        };
        let k = k.trim();
        validate_target_label(k, v).map_err(|e| format!("--label {e}"))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(HostSelector {
        white: patterns(hosts, "--host")?,
        black: patterns(exclude, "--exclude")?,
        labels: map,
    })
}

impl PackageVersion {
    /// What an agent must install for this version.
    pub fn to_ref(&self) -> PackageRef {
        PackageRef {
            name: self.name.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            size: self.size,
            deploy_dir: self.deploy_dir.clone(),
        }
    }
}

/// Body of `POST /v1/packages/NAME/rollback`; an empty body means the previous version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to make current; none = the newest version older than the current one.
    #[serde(default)]
    pub version: Option<u64>,
}

/// An agent's state for one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    Installed,
    Downloading,
    Failed,
}

impl PackageState {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageState::Installed => "installed",
            PackageState::Downloading => "downloading",
            PackageState::Failed => "failed",
        }
    }
}

/// What an agent reports about one package in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    /// The version in place (0 when none is installed yet).
    pub version: u64,
    #[serde(default)]
    pub sha256: String,
    pub state: PackageState,
    /// The version being downloaded or that failed, when it differs from `version`.
    #[serde(default)]
    pub target_version: Option<u64>,
    /// The last deploy error, if the last attempt failed (kept while the agent retries, with
    /// `state` Downloading).
    #[serde(default)]
    pub error: Option<String>,
    /// Where the bytes of the last version this agent downloaded came from (packages from
    /// peers). Absent from older agents and until this agent downloads a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<FetchSources>,
}

/// Where the bytes of one downloaded package version came from (packages from peers): how many
/// from peer agents and how many from managers, and the peers that failed this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchSources {
    pub version: u64,
    #[serde(default)]
    pub from_peers: u64,
    #[serde(default)]
    pub from_managers: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_sources: Vec<BadSource>,
}

impl FetchSources {
    /// The share of the bytes that came from peers, in percent (None when nothing was counted).
    pub fn peer_percent(&self) -> Option<f64> {
        let total = self.from_peers + self.from_managers;
        (total > 0).then(|| 100.0 * self.from_peers as f64 / total as f64)
    }
}

/// A peer that failed a node during one download, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadSource {
    /// The peer's URL, as the manager named it.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<uuid::Uuid>,
    /// `sha256` (it sent a chunk that fails its hash), `refused` (it refused this node's ticket)
    /// or `unreachable` (no answer, or it stopped sending, within `--peer-timeout`).
    pub reason: String,
    /// Chunks this happened on.
    pub count: u64,
}

/// How a package is deployed, decided by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    /// Any other name: the content becomes `DEPLOYDIR/NAME`, mode 0755.
    File,
    /// `.tar.gz` or `.tgz`.
    TarGz,
    /// `.tar.zst`.
    TarZst,
}

impl PackageKind {
    pub fn of(name: &str) -> PackageKind {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            PackageKind::TarGz
        } else if lower.ends_with(".tar.zst") {
            PackageKind::TarZst
        } else {
            PackageKind::File
        }
    }

    pub fn is_archive(self) -> bool {
        self != PackageKind::File
    }

    /// The name without its archive extension (`proj.tar.gz` → `proj`): where an archive whose
    /// top level is not one directory becomes visible.
    pub fn stem(self, name: &str) -> &str {
        let cut = match self {
            PackageKind::File => 0,
            PackageKind::TarGz if name.to_ascii_lowercase().ends_with(".tgz") => 4,
            PackageKind::TarGz => 7,
            PackageKind::TarZst => 8,
        };
        let stem = &name[..name.len() - cut];
        if stem.is_empty() { name } else { stem }
    }
}

/// Checks a package name: the file or archive name, `[A-Za-z0-9._-]`, 1..128 characters, not
/// starting with '.' (agents keep their own bookkeeping under `DEPLOYDIR/.op-packages`, and a hidden
/// name is never what an operator meant to deploy). The reason leaves the name out: callers put
/// it first (`package name ".x" starts with '.'`).
pub fn validate_package_name(name: &str) -> Result<(), String> {
    crate::job::validate_name(name)?;
    if name.starts_with('.') {
        return Err("starts with '.'; package names must not".into());
    }
    if name.starts_with('-') {
        return Err(
            "starts with '-', which commands would take for an option; package names must not"
                .into(),
        );
    }
    Ok(())
}

/// Checks a deploy dir: empty (the agent's default) or an absolute path without `..`, control
/// characters or NUL, at most 1024 bytes.
pub fn validate_deploy_dir(dir: &str) -> Result<(), String> {
    if dir.is_empty() {
        return Ok(());
    }
    if dir.len() > 1024 {
        return Err("is longer than 1024 bytes".into());
    }
    if !dir.starts_with('/') {
        return Err(format!("{dir:?} is not an absolute path"));
    }
    if dir.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if dir.split('/').any(|c| c == "..") {
        return Err(format!("{dir:?} contains '..'"));
    }
    Ok(())
}

/// The deploy dir as stored: trailing slashes removed (`/data/src/` → `/data/src`), `/` kept.
pub fn normalize_deploy_dir(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() && dir.starts_with('/') {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_stems() {
        assert_eq!(PackageKind::of("test.py"), PackageKind::File);
        assert_eq!(PackageKind::of("proj.tar.gz"), PackageKind::TarGz);
        assert_eq!(PackageKind::of("proj.TGZ"), PackageKind::TarGz);
        assert_eq!(PackageKind::of("proj.tar.zst"), PackageKind::TarZst);
        assert_eq!(PackageKind::of("proj.tar"), PackageKind::File);
        assert_eq!(PackageKind::TarGz.stem("proj.tar.gz"), "proj");
        assert_eq!(PackageKind::TarGz.stem("proj.tgz"), "proj");
        assert_eq!(PackageKind::TarZst.stem("proj.tar.zst"), "proj");
        assert_eq!(PackageKind::TarGz.stem(".tar.gz"), ".tar.gz");
        assert_eq!(PackageKind::File.stem("a.py"), "a.py");
    }

    #[test]
    fn names_and_dirs() {
        assert!(validate_package_name("test.py").is_ok());
        assert!(validate_package_name("python_project_dir.tar.gz").is_ok());
        assert!(validate_package_name(".op-packages").is_err());
        assert!(validate_package_name("a/b").is_err());
        assert!(validate_package_name("..").is_err());
        // Callers put the name before the reason (`package name ".x" starts with ...`): the
        // reason must not repeat it.
        for bad in [".x", "-rf", "..", "a/b"] {
            let reason = validate_package_name(bad).unwrap_err();
            assert!(!reason.contains(&format!("{bad:?}")), "{bad}: {reason}");
        }
        assert!(validate_deploy_dir("").is_ok());
        assert!(validate_deploy_dir("/data/op-agent/src/").is_ok());
        assert!(validate_deploy_dir("data/src").is_err());
        assert!(validate_deploy_dir("/data/../etc").is_err());
        assert!(validate_deploy_dir("/data/\nx").is_err());
        assert_eq!(normalize_deploy_dir("/data/src/"), "/data/src");
        assert_eq!(normalize_deploy_dir("/"), "/");
        assert_eq!(normalize_deploy_dir(""), "");
    }

    #[test]
    fn targets_parse_check_and_describe() {
        let none = parse_target(&[], &[], &[]).unwrap();
        assert!(is_everywhere(&none));
        assert_eq!(describe_target(&none), "everywhere");
        let t = parse_target(
            &["web-*, 10.0.0.0/8".into()],
            &["web-3".into()],
            &["role=db".into()],
        )
        .unwrap();
        assert_eq!(t.white.len(), 2);
        assert_eq!(
            describe_target(&t),
            "host web-*,10.0.0.0/8 exclude web-3 label role=db"
        );
        let mut db = crate::hosts::HostIdentity {
            hostname: "web-1".into(),
            ..Default::default()
        };
        assert!(!t.matches(&db), "the label narrows");
        db.labels.insert("role".into(), "db".into());
        assert!(t.matches(&db));
        let err = parse_target(&[], &[], &["role".into()]).unwrap_err();
        assert!(err.contains("not KEY=VALUE"), "{err}");
        let err = parse_target(&[], &[], &["ro le=db".into()]).unwrap_err();
        assert!(err.contains("label key"), "{err}");
        let err = parse_target(&[], &[], &["role=a,b".into()]).unwrap_err();
        assert!(err.contains("label value"), "{err}");
        let err = parse_target(&["10.0.0.999".into()], &[], &[]).unwrap_err();
        assert!(err.starts_with("--host host entry"), "{err}");
        let err = parse_target(&[], &["fact.cpus>=abc".into()], &[]).unwrap_err();
        assert!(err.starts_with("--exclude"), "{err}");
        assert!(parse_target(&[",".into()], &[], &[]).is_err());
    }

    #[test]
    fn an_untargeted_version_reads_and_writes_as_before() {
        let json = r#"{"name":"a.py","version":1,"sha256":"x","size":1,"uploaded_at":"2026-01-01T00:00:00Z"}"#;
        let v: PackageVersion = serde_json::from_str(json).unwrap();
        assert!(is_everywhere(&v.target));
        assert!(!serde_json::to_string(&v).unwrap().contains("target"));
    }
}
