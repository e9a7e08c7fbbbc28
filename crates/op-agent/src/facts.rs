//! Probes this machine's facts ([`op_proto::facts::Facts`]): OS id and version from
//! /etc/os-release, the kernel release, CPU count and model from /proc/cpuinfo, total memory from
//! /proc/meminfo, the local filesystems mounted from a device and their sizes (statvfs), the
//! virtualisation, and the agent's version. Only values that stay put: free space, load and
//! uptime are heartbeat metrics.
//!
//! Virtualisation is read from the files `systemd-detect-virt` reads (container markers, DMI,
//! `/sys/hypervisor`, the CPU's hypervisor flag) rather than by running it: only the executor
//! spawns processes (ARCHITECTURE.md, invariant 5). Network filesystems are never statted, so a
//! hung NFS mount cannot stall the probe.

use std::collections::BTreeMap;
use std::path::Path;

use op_proto::facts::{Disk, Facts};

/// How often the link probes again to notice a change (a resized disk, added memory, an OS
/// upgrade without a restart).
pub const REPROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Filesystem types that hold data on a local device.
const LOCAL_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "vfat", "exfat", "ntfs", "ntfs3", "jfs",
    "reiserfs", "bcachefs",
];

/// This machine's facts now.
pub fn probe() -> Facts {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut os_release = read("/etc/os-release");
    if os_release.is_empty() {
        os_release = read("/usr/lib/os-release");
    }
    let os = parse_os_release(&os_release);
    let cpuinfo = read("/proc/cpuinfo");
    let (cpus, cpu_model, hypervisor_flag) = parse_cpuinfo(&cpuinfo);
    let cpus = cpus.or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32)
    });
    Facts {
        os: os.get("ID").cloned().unwrap_or_default(),
        os_version: os.get("VERSION_ID").cloned().unwrap_or_default(),
        os_name: os.get("PRETTY_NAME").cloned().unwrap_or_default(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpus,
        cpu_model,
        memory_mb: parse_mem_total_kb(&read("/proc/meminfo")).map(|kb| kb / 1024),
        disks: disks(&read("/proc/self/mounts")),
        virt: virt(hypervisor_flag),
        agent_version: crate::version().to_string(),
    }
    .bounded()
}

/// `KEY=VALUE` lines, values unquoted.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(k, _)| !k.starts_with('#'))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.replace("\\\"", "\""))
        })
        .collect()
}

/// (logical CPUs, the first model name, whether the hypervisor flag is set).
fn parse_cpuinfo(text: &str) -> (Option<u32>, String, bool) {
    let mut count = 0u32;
    let mut model = String::new();
    let mut hypervisor = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => count += 1,
            "model name" | "Model" | "cpu model" if model.is_empty() => model = v.to_string(),
            "flags" if !hypervisor => {
                hypervisor = v.split_whitespace().any(|f| f == "hypervisor");
            }
            _ => {}
        }
    }
    ((count > 0).then_some(count), model, hypervisor)
}

fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// /proc/self/mounts escapes spaces and the like as `\040`.
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The local filesystems of a mount table, one per device (the first mount of a device; bind
/// mounts repeat it), with their sizes.
fn disks(mounts: &str) -> Vec<Disk> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (device, mount, fs) in local_mounts(mounts) {
        if !seen.insert(device.clone()) {
            continue;
        }
        let Ok(st) = nix::sys::statvfs::statvfs(Path::new(&mount)) else {
            continue;
        };
        // fsblkcnt_t and c_ulong are u64 here, narrower on some targets.
        #[allow(clippy::unnecessary_cast)]
        let size = (st.blocks() as u64).saturating_mul(st.fragment_size() as u64);
        out.push(Disk {
            mount,
            device,
            fs,
            size_bytes: size,
        });
        if out.len() == 64 {
            break;
        }
    }
    out
}

/// (device, mount point, fs type) of the mounts of a local filesystem from a device.
fn local_mounts(mounts: &str) -> Vec<(String, String, String)> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (device, mount, fs) = (f.next()?, f.next()?, f.next()?);
            let local = LOCAL_FS.contains(&fs) && (device.starts_with("/dev/") || fs == "zfs");
            local.then(|| {
                (
                    unescape_mount(device),
                    unescape_mount(mount),
                    fs.to_string(),
                )
            })
        })
        .collect()
}

fn virt(hypervisor_flag: bool) -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let exists = |p: &str| Path::new(p).exists();
    // Containers first, as systemd-detect-virt does.
    let container = read("/run/systemd/container");
    if !container.is_empty() {
        return container;
    }
    if exists("/run/.containerenv") {
        return "podman".into();
    }
    if exists("/.dockerenv") {
        return "docker".into();
    }
    if let Some(c) = read("/proc/1/environ")
        .split('\0')
        .find_map(|kv| kv.strip_prefix("container="))
        .filter(|c| !c.is_empty())
    {
        return c.to_string();
    }
    let dmi = format!(
        "{} {} {}",
        read("/sys/class/dmi/id/sys_vendor"),
        read("/sys/class/dmi/id/product_name"),
        read("/sys/class/dmi/id/bios_vendor")
    );
    if let Some(v) = vm_of_dmi(&dmi) {
        return v.into();
    }
    let hv = read("/sys/hypervisor/type");
    if !hv.is_empty() {
        return hv;
    }
    if hypervisor_flag { "vm" } else { "none" }.into()
}

/// The hypervisor that DMI vendor and product strings name.
fn vm_of_dmi(dmi: &str) -> Option<&'static str> {
    let d = dmi.to_ascii_lowercase();
    [
        ("qemu", "qemu"),
        ("kvm", "kvm"),
        ("vmware", "vmware"),
        ("virtualbox", "oracle"),
        ("innotek", "oracle"),
        ("xen", "xen"),
        ("amazon ec2", "amazon"),
        ("google compute engine", "google"),
        ("microsoft corporation virtual machine", "microsoft"),
        ("parallels", "parallels"),
        ("bochs", "bochs"),
    ]
    .iter()
    .find(|(needle, _)| d.contains(needle))
    .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release_cpuinfo_and_mounts() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nID=ubuntu\nVERSION_ID='22.04'\n# c\n",
        );
        assert_eq!(os["ID"], "ubuntu");
        assert_eq!(os["VERSION_ID"], "22.04");
        assert_eq!(os["PRETTY_NAME"], "Ubuntu 22.04.4 LTS");
        let (n, model, hv) = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t: fpu hypervisor\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R)\n",
        );
        assert_eq!((n, model.as_str(), hv), (Some(2), "Intel(R) Xeon(R)", true));
        assert_eq!(
            parse_mem_total_kb("MemTotal:  2048000 kB\nMemFree: 1 kB\n"),
            Some(2_048_000)
        );
        let m = local_mounts(
            "proc /proc proc rw 0 0\n/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n\
             srv:/x /mnt/nfs nfs4 rw 0 0\n/dev/vdb /my\\040data xfs rw 0 0\ntank/home /home zfs rw 0 0\n",
        );
        let mounts: Vec<&str> = m.iter().map(|(_, m, _)| m.as_str()).collect();
        assert_eq!(mounts, ["/", "/my data", "/home"]);
        assert_eq!(
            vm_of_dmi("QEMU Standard PC (Q35 + ICH9, 2009)"),
            Some("qemu")
        );
        assert_eq!(vm_of_dmi("Dell Inc. PowerEdge R640"), None);
    }

    #[test]
    fn probes_this_machine() {
        let f = probe();
        assert!(f.cpus.is_some_and(|c| c > 0));
        assert!(f.memory_mb.is_some_and(|m| m > 0));
        assert!(!f.kernel.is_empty());
        assert!(!f.virt.is_empty());
        let os = parse_os_release(&std::fs::read_to_string("/etc/os-release").unwrap_or_default());
        assert_eq!(f.os, os.get("ID").cloned().unwrap_or_default());
        // Probing twice gives the same facts: nothing that changes by itself is in them.
        assert_eq!(probe(), f);
    }
}
