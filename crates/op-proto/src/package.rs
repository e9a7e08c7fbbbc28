//! Packages: versioned files and archives the manager stores and every agent deploys.
//!
//! The manager keeps each upload as an immutable version (`name`, `version`, `sha256`, `size`,
//! `deploy_dir`) and one `current` version per package; agents receive the current version of
//! every package as a [`PackageRef`] in their desired state and report what they hold as
//! [`InstalledPackage`] in every heartbeat. What a name means for deployment (a plain file or an
//! archive to unpack) is decided here, by [`PackageKind::of`], so the CLI, the manager and the
//! agent can never disagree about it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
/// name is never what an operator meant to deploy).
pub fn validate_package_name(name: &str) -> Result<(), String> {
    crate::job::validate_name(name)?;
    if name.starts_with('.') {
        return Err(format!("{name:?} starts with '.'; package names must not"));
    }
    if name.starts_with('-') {
        return Err(format!(
            "{name:?} starts with '-', which commands would take for an option; package names must not"
        ));
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
        assert!(validate_deploy_dir("").is_ok());
        assert!(validate_deploy_dir("/data/op-agent/src/").is_ok());
        assert!(validate_deploy_dir("data/src").is_err());
        assert!(validate_deploy_dir("/data/../etc").is_err());
        assert!(validate_deploy_dir("/data/\nx").is_err());
        assert_eq!(normalize_deploy_dir("/data/src/"), "/data/src");
        assert_eq!(normalize_deploy_dir("/"), "/");
        assert_eq!(normalize_deploy_dir(""), "");
    }
}
