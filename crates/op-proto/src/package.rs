//! Package references: versioned files and archives distributed to agents.

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

/// An agent's state for one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    Installed,
    Downloading,
    Failed,
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
    /// The last deploy error, if the last attempt failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Checks a package name: the file or archive name, `[A-Za-z0-9._-]`, not `.`/`..`.
pub fn validate_package_name(name: &str) -> Result<(), String> {
    crate::job::validate_name(name)
}
