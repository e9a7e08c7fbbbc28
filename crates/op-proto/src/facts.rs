//! Facts: what an agent probes about its machine (OS, kernel, CPUs, memory, disks,
//! virtualisation, its own version), reported to the manager only when they change and matched by
//! `fact.KEY=VALUE` / `fact.KEY>=N` / `fact.KEY<=N` host selectors ([`crate::hosts`]).
//!
//! Values that change on their own (free space, load, uptime) are not facts: they belong to the
//! heartbeat's metrics ([`crate::node::LoadInfo`]). The probing itself is the agent's
//! (`op-agent/src/facts.rs`); this module is the model, the selector keys and the hash both sides
//! compare, so the agent sends its facts only when the manager's acknowledged hash differs.

use serde::{Deserialize, Serialize};

/// One machine's facts. Every field is optional on the wire: a fact the agent could not probe is
/// empty (strings) or absent (numbers), and a selector on it matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Facts {
    /// `ID` of /etc/os-release (`ubuntu`, `debian`, `rhel`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// `VERSION_ID` of /etc/os-release (`22.04`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// `PRETTY_NAME` of /etc/os-release.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_name: String,
    /// The kernel release (`uname -r`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
    /// The machine (`uname -m`: `x86_64`, `aarch64`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// Logical CPUs (/proc/cpuinfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// The first CPU's `model name` (/proc/cpuinfo).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu_model: String,
    /// Total memory in MiB (`MemTotal` of /proc/meminfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// The local filesystems mounted from a device, one per device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Virtualisation: `none`, a hypervisor (`kvm`, `vmware`, `xen`, `microsoft`, `vm` when only
    /// the CPU's hypervisor flag says so) or a container (`docker`, `podman`, `lxc`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub virt: String,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
}

/// A mounted local filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Disk {
    pub mount: String,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub fs: String,
    /// Size of the filesystem in bytes (statvfs), not its free space.
    #[serde(default)]
    pub size_bytes: u64,
}

/// A fact's value as a selector sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum FactValue {
    Text(String),
    Number(u64),
}

impl FactValue {
    /// The value as text (`=` compares this, ignoring ASCII case).
    pub fn text(&self) -> String {
        match self {
            FactValue::Text(t) => t.clone(),
            FactValue::Number(n) => n.to_string(),
        }
    }

    /// The value as a number (`>=`/`<=` compare this); `None` when it is not one.
    pub fn number(&self) -> Option<f64> {
        match self {
            FactValue::Number(n) => Some(*n as f64),
            FactValue::Text(t) => t.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        }
    }
}

/// The keys a `fact.` selector may name, with whether `>=`/`<=` make sense for them.
pub const FACT_KEYS: &[(&str, bool)] = &[
    ("os", false),
    ("os_version", true),
    ("os_name", false),
    ("kernel", false),
    ("arch", false),
    ("cpus", true),
    ("cpu_model", false),
    ("memory_mb", true),
    ("disks", true),
    ("disk_gb", true),
    ("virt", false),
    ("agent_version", false),
];

/// Whether `key` is a fact key, and whether it compares as a number: `None` for an unknown key.
pub fn key_is_numeric(key: &str) -> Option<bool> {
    FACT_KEYS.iter().find(|(k, _)| *k == key).map(|(_, n)| *n)
}

/// The fact keys joined for an error message.
pub fn known_keys() -> String {
    FACT_KEYS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

const GIB: u64 = 1024 * 1024 * 1024;

impl Facts {
    /// The value of a selector key (see [`FACT_KEYS`]); `None` when it was not probed. `disks` is
    /// the number of disks, `disk_gb` their total size in GiB (rounded down).
    pub fn get(&self, key: &str) -> Option<FactValue> {
        let text = |s: &str| (!s.is_empty()).then(|| FactValue::Text(s.to_string()));
        match key {
            "os" => text(&self.os),
            "os_version" => text(&self.os_version),
            "os_name" => text(&self.os_name),
            "kernel" => text(&self.kernel),
            "arch" => text(&self.arch),
            "cpus" => self.cpus.map(|n| FactValue::Number(u64::from(n))),
            "cpu_model" => text(&self.cpu_model),
            "memory_mb" => self.memory_mb.map(FactValue::Number),
            "disks" => Some(FactValue::Number(self.disks.len() as u64)),
            "disk_gb" => Some(FactValue::Number(
                self.disks.iter().map(|d| d.size_bytes).sum::<u64>() / GIB,
            )),
            "virt" => text(&self.virt),
            "agent_version" => text(&self.agent_version),
            _ => None,
        }
    }

    /// A stable hash of these facts (FNV-1a over their JSON form), which the manager echoes back
    /// ([`crate::agent::DesiredState::facts_hash`]) so an agent sends its facts only when they
    /// differ from what the manager holds.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The short FACTS cell of `get nodes -o wide`, `get node NAME` and the console:
    /// `ubuntu 22.04, 2 cpus, 7.7 GiB, kvm`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let os = format!("{} {}", self.os, self.os_version)
            .trim()
            .to_string();
        if !os.is_empty() {
            parts.push(os);
        }
        if let Some(c) = self.cpus {
            parts.push(format!("{c} cpu{}", if c == 1 { "" } else { "s" }));
        }
        if let Some(m) = self.memory_mb {
            parts.push(format!("{:.1} GiB", m as f64 / 1024.0));
        }
        if !self.virt.is_empty() && self.virt != "none" {
            parts.push(self.virt.clone());
        }
        parts.join(", ")
    }

    /// These facts cut to the limits [`Facts::check`] enforces (control characters dropped,
    /// strings cut at 253 bytes on a character boundary, at most 64 disks), so what an agent
    /// probed on an odd machine never makes the manager refuse its heartbeat.
    pub fn bounded(mut self) -> Facts {
        fn cut(s: &mut String) {
            s.retain(|c| !c.is_control());
            if s.len() > 253 {
                let mut end = 253;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
        }
        for s in [
            &mut self.os,
            &mut self.os_version,
            &mut self.os_name,
            &mut self.kernel,
            &mut self.arch,
            &mut self.cpu_model,
            &mut self.virt,
            &mut self.agent_version,
        ] {
            cut(s);
        }
        self.disks.truncate(64);
        for d in &mut self.disks {
            cut(&mut d.mount);
            cut(&mut d.device);
            cut(&mut d.fs);
        }
        self
    }

    /// Every value within the limits the manager accepts: strings of at most 253 printable
    /// characters, at most 64 disks. The error names the first field that is not.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("os", &self.os),
            ("os_version", &self.os_version),
            ("os_name", &self.os_name),
            ("kernel", &self.kernel),
            ("arch", &self.arch),
            ("cpu_model", &self.cpu_model),
            ("virt", &self.virt),
            ("agent_version", &self.agent_version),
        ];
        let ok = |s: &str| s.len() <= 253 && !s.chars().any(char::is_control);
        for (name, v) in fields {
            if !ok(v) {
                return Err(format!(
                    "fact {name} must be at most 253 printable characters"
                ));
            }
        }
        if self.disks.len() > 64 {
            return Err("at most 64 disks".into());
        }
        for d in &self.disks {
            if !ok(&d.mount) || !ok(&d.device) || !ok(&d.fs) {
                return Err(
                    "a disk's mount, device and fs must be at most 253 printable characters".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Facts {
        Facts {
            os: "ubuntu".into(),
            os_version: "22.04".into(),
            cpus: Some(8),
            memory_mb: Some(16 * 1024),
            disks: vec![
                Disk {
                    mount: "/".into(),
                    device: "/dev/sda1".into(),
                    fs: "ext4".into(),
                    size_bytes: 100 * GIB,
                },
                Disk {
                    mount: "/data".into(),
                    device: "/dev/sdb".into(),
                    fs: "xfs".into(),
                    size_bytes: 50 * GIB + 5,
                },
            ],
            virt: "kvm".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn keys_and_values() {
        let f = sample();
        assert_eq!(f.get("os"), Some(FactValue::Text("ubuntu".into())));
        assert_eq!(f.get("cpus").and_then(|v| v.number()), Some(8.0));
        assert_eq!(f.get("disks"), Some(FactValue::Number(2)));
        assert_eq!(f.get("disk_gb"), Some(FactValue::Number(150)));
        assert_eq!(f.get("os_version").and_then(|v| v.number()), Some(22.04));
        assert_eq!(f.get("kernel"), None, "not probed");
        assert_eq!(f.get("nope"), None);
        for (k, _) in FACT_KEYS {
            assert!(key_is_numeric(k).is_some());
        }
        assert_eq!(key_is_numeric("nope"), None);
    }

    #[test]
    fn hash_follows_the_values_and_summary_reads() {
        let a = sample();
        let mut b = sample();
        assert_eq!(a.hash(), b.hash());
        b.cpus = Some(4);
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.summary(), "ubuntu 22.04, 8 cpus, 16.0 GiB, kvm");
        assert_eq!(Facts::default().summary(), "");
        // The JSON form round-trips and leaves out what was not probed.
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("kernel"));
        assert_eq!(serde_json::from_str::<Facts>(&json).unwrap(), a);
        assert!(a.check().is_ok());
        b.os = "x".repeat(300);
        assert!(b.check().is_err());
        b.os = format!("{}\u{7}é", "x".repeat(252));
        let cut = b.clone().bounded();
        assert!(cut.check().is_ok());
        assert_eq!(cut.os, "x".repeat(252), "cut on a character boundary");
    }
}
