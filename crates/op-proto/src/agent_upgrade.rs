//! Agent self-upgrade (issue 22): an agent release is a package with a reserved name per
//! platform (`op-agent-linux-x86_64`), whose declared agent version and watchdog deadline the
//! manager keeps beside it ([`AgentRelease`]). The checks the manager makes before it stores a
//! release live here so the CLI, the manager and the agent agree: [`check_elf`] (the file is an
//! executable for the platform the name names) and [`compare_versions`] (dotted numbers).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Prefix of every reserved agent-release package name.
pub const RESERVED_PREFIX: &str = "op-agent-";

/// The default watchdog deadline: the new agent must reach a manager within it.
pub const DEFAULT_DEADLINE_SECS: u64 = 120;

/// The reserved package name of a platform (`std::env::consts::{OS, ARCH}` spelling).
pub fn package_name(os: &str, arch: &str) -> String {
    format!("{RESERVED_PREFIX}{os}-{arch}")
}

/// The reserved package name of the platform this code was built for.
pub fn own_package_name() -> String {
    package_name(std::env::consts::OS, std::env::consts::ARCH)
}

/// The platforms an agent release may name.
pub const PLATFORMS: &[(&str, &str)] = &[("linux", "x86_64"), ("linux", "aarch64")];

/// `(os, arch)` when `name` is a reserved agent-release name.
pub fn platform_of(name: &str) -> Option<(&'static str, &'static str)> {
    PLATFORMS
        .iter()
        .copied()
        .find(|(os, arch)| name == package_name(os, arch))
}

/// True for names an ordinary upload must not take.
pub fn is_reserved(name: &str) -> bool {
    platform_of(name).is_some()
}

/// What the manager keeps beside one uploaded agent release (by its sha256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRelease {
    /// The version the new binary must report (`op-agent --version`, heartbeats).
    pub version: String,
    /// The new agent must reach a manager within this many seconds, or the previous binary is
    /// restored.
    pub deadline_secs: u64,
    #[serde(default)]
    pub forced: bool,
}

/// A pin: hosts it selects stay on `version` (a node id, or a `k=v` label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPin {
    /// `node:<uuid>` or `label:<k>=<v>`.
    pub target: String,
    pub version: String,
}

impl AgentPin {
    /// The pin that applies to a node among `pins`: its own, else the first label pin it matches.
    pub fn applying<'a>(
        pins: &'a [AgentPin],
        node: uuid::Uuid,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<&'a AgentPin> {
        let own = format!("node:{node}");
        pins.iter().find(|p| p.target == own).or_else(|| {
            pins.iter().find(|p| {
                p.target
                    .strip_prefix("label:")
                    .and_then(|kv| kv.split_once('='))
                    .is_some_and(|(k, v)| labels.get(k).map(String::as_str) == Some(v))
            })
        })
    }
}

/// Body of `POST /v1/agent-upgrade/pins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// A node name or id; exclusive with `label`.
    #[serde(default)]
    pub node: Option<String>,
    /// `k=v`.
    #[serde(default)]
    pub label: Option<String>,
    /// The version to keep; absent = unpin.
    #[serde(default)]
    pub version: Option<String>,
}

/// One host in `agentcli agent upgrade status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostUpgrade {
    pub node_id: uuid::Uuid,
    pub hostname: String,
    pub status: String,
    pub agent_version: String,
    /// `upgraded`, `pending`, `downloading`, `failed`, `pinned`, `other-platform`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/agent-upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// The current release of each platform: (package name, package version, release).
    pub releases: Vec<ReleaseView>,
    pub pins: Vec<AgentPin>,
    pub hosts: Vec<HostUpgrade>,
    /// The newest staged rollout of each platform's current release (an agent release always
    /// goes out staged).
    #[serde(default)]
    pub rollouts: Vec<crate::rollout::RolloutInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    pub package: String,
    pub package_version: u64,
    pub sha256: String,
    pub release: Option<AgentRelease>,
}

/// The answer to `PUT /v1/agents/upgrade/NAME`: what was stored, and how it is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStarted {
    pub package: crate::package::PackageVersion,
    pub release: AgentRelease,
    /// The newest version an agent ran when the release was stored ("" when none reported).
    #[serde(default)]
    pub newest_running: String,
    /// The rollout that delivers it, when staged rollouts deliver it (its id); `None`: every
    /// selected host at once.
    #[serde(default)]
    pub rollout: Option<String>,
}

/// Compares dotted version numbers (`0.1.10` > `0.1.9`); a part that is not a number compares
/// by its leading digits, then as text (`1.2.0-rc1` < `1.2.0-rc2`); missing parts are 0.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let split = |v: &str| -> Vec<(u64, String)> {
        v.trim()
            .trim_start_matches('v')
            .split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                let rest = p[digits.len()..].to_string();
                (digits.parse().unwrap_or(0), rest)
            })
            .collect()
    };
    let (a, b) = (split(a), split(b));
    for i in 0..a.len().max(b.len()) {
        let pa = a.get(i).cloned().unwrap_or((0, String::new()));
        let pb = b.get(i).cloned().unwrap_or((0, String::new()));
        let ord =
            pa.0.cmp(&pb.0)
                .then_with(|| match (pa.1.is_empty(), pb.1.is_empty()) {
                    // A release sorts after its pre-releases: 1.0 > 1.0-rc1.
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    _ => pa.1.cmp(&pb.1),
                });
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Checks a declared agent version: 1..64 characters of `[0-9A-Za-z.+-]`, starting with a digit.
pub fn validate_version(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "version {v:?} is not a version (dotted numbers, e.g. 0.2.0)"
        ))
    }
}

/// The ELF `e_machine` of an architecture (`std::env::consts::ARCH` spelling).
pub fn elf_machine(arch: &str) -> Option<u16> {
    match arch {
        "x86_64" => Some(62),
        "aarch64" => Some(183),
        _ => None,
    }
}

fn machine_name(m: u16) -> String {
    match m {
        3 => "x86 (32-bit)".into(),
        40 => "arm (32-bit)".into(),
        62 => "x86_64".into(),
        183 => "aarch64".into(),
        243 => "riscv".into(),
        other => format!("machine {other}"),
    }
}

/// Checks that `head` (the file's first 64 bytes or more) starts an ELF executable a `arch`
/// Linux host runs: magic, 64-bit class, little endian, `e_machine`, and type EXEC or DYN.
pub fn check_elf(head: &[u8], arch: &str) -> Result<(), String> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return Err("the file is not an ELF executable (no ELF header)".into());
    }
    if head[4] != 2 {
        return Err(format!(
            "the file is a 32-bit ELF; {arch} agents need a 64-bit executable"
        ));
    }
    if head[5] != 1 {
        return Err("the file is a big-endian ELF; agents need little-endian".into());
    }
    let e_type = u16::from_le_bytes([head[16], head[17]]);
    let e_machine = u16::from_le_bytes([head[18], head[19]]);
    let want = elf_machine(arch).ok_or_else(|| format!("no agent releases for {arch}"))?;
    if e_machine != want {
        return Err(format!(
            "the file is an ELF for {}, not for {arch}",
            machine_name(e_machine)
        ));
    }
    match e_type {
        2 | 3 => Ok(()),
        1 => Err("the file is an ELF object file (relocatable), not an executable".into()),
        4 => Err("the file is an ELF core dump, not an executable".into()),
        t => Err(format!("the file is an ELF of type {t}, not an executable")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, machine: u16, e_type: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn elf_headers_are_judged_by_class_machine_and_type() {
        assert!(check_elf(&header(2, 62, 2), "x86_64").is_ok());
        assert!(check_elf(&header(2, 62, 3), "x86_64").is_ok());
        assert!(check_elf(&header(2, 183, 3), "aarch64").is_ok());
        let e = check_elf(&header(2, 183, 3), "x86_64").unwrap_err();
        assert!(e.contains("aarch64"), "{e}");
        assert!(
            check_elf(&header(1, 3, 2), "x86_64")
                .unwrap_err()
                .contains("32-bit")
        );
        assert!(
            check_elf(&header(2, 62, 1), "x86_64")
                .unwrap_err()
                .contains("object")
        );
        assert!(
            check_elf(b"#!/bin/sh\necho hi\n....", "x86_64")
                .unwrap_err()
                .contains("not an ELF")
        );
        assert!(check_elf(b"", "x86_64").is_err());
    }

    #[test]
    fn versions_compare_as_dotted_numbers() {
        assert_eq!(compare_versions("0.1.10", "0.1.9"), Ordering::Greater);
        assert_eq!(compare_versions("0.1.0.1", "0.1.0"), Ordering::Greater);
        assert_eq!(compare_versions("0.1", "0.1.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0"), Ordering::Less);
        assert_eq!(compare_versions("v2.0", "1.9.9"), Ordering::Greater);
        assert!(validate_version("0.2.0").is_ok());
        assert!(validate_version("latest").is_err());
        assert!(validate_version("").is_err());
    }

    #[test]
    fn reserved_names_name_their_platform() {
        assert_eq!(package_name("linux", "x86_64"), "op-agent-linux-x86_64");
        assert_eq!(
            platform_of("op-agent-linux-aarch64"),
            Some(("linux", "aarch64"))
        );
        assert!(platform_of("op-agent-windows").is_none());
        assert!(!is_reserved("tool.tar.gz"));
    }
}
