//! The seed's cgroup fields (`CPUShares`, `CPUQuotaUs`, `MemoryLimit`, `MemorySwLimit`,
//! `IOReadLimit`, `IOWriteLimit`, `IOLimitDevice`), applied to one run.
//!
//! A run whose job sets any limit gets its own cgroup, created before the process starts; the
//! child joins it between fork and exec (it writes `0` to `cgroup.procs`), so nothing of the job
//! ever runs outside the limits. When the run ends, whatever is left in the cgroup (processes
//! that escaped the process group with `setsid`) is killed and the cgroup removed.
//!
//! Both hierarchies are supported, detected once per agent:
//! - **cgroup v1** (the seed's own field names map one to one): `cpu.shares`,
//!   `cpu.cfs_quota_us`, `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`,
//!   `blkio.throttle.{read,write}_bps_device`, each under the agent's own group of that
//!   controller, in `op-agent/RUN_ID`.
//! - **cgroup v2**: `cpu.weight` (shares scaled to 1..10000), `cpu.max`, `memory.max`,
//!   `memory.swap.max` (MemorySwLimit minus MemoryLimit), `io.max`, in a child of the agent's
//!   group. v2 requires the controllers to be delegated to the agent (systemd `Delegate=yes`).
//!
//! Whatever cannot be applied (no writable hierarchy, a missing controller file, an unknown
//! device) is said in the run record's notes; the run itself still starts. Nothing is silent.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use op_proto::job::CgroupLimits;
use uuid::Uuid;

/// The cgroup hierarchy of this host, as far as the agent can use it.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    /// v1: the agent's own directory in each controller's hierarchy.
    V1 {
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
        blkio: Option<PathBuf>,
    },
    /// v2: the agent's own cgroup directory.
    V2 { own: PathBuf },
    /// No usable hierarchy, and why.
    Unavailable(String),
}

/// The hierarchy, detected at first use.
pub fn hierarchy() -> &'static Hierarchy {
    static H: OnceLock<Hierarchy> = OnceLock::new();
    H.get_or_init(|| {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        detect(&cgroups, &mountinfo)
    })
}

/// Works out the hierarchy from `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub fn detect(cgroups: &str, mountinfo: &str) -> Hierarchy {
    // v1 mounts: "... - cgroup cgroup rw,memory" with the mount point in field 5.
    let mut v1_mounts: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut v2_mount: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4).map(PathBuf::from);
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let options: Vec<String> = r
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::to_string)
            .collect();
        match (fstype, mount_point) {
            ("cgroup", Some(mp)) => v1_mounts.push((mp, options)),
            ("cgroup2", Some(mp)) => v2_mount = v2_mount.or(Some(mp)),
            _ => {}
        }
    }
    let own_path = |controller: &str| -> Option<String> {
        cgroups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
    };
    let v1_dir = |controller: &str| -> Option<PathBuf> {
        let (mp, _) = v1_mounts
            .iter()
            .find(|(_, opts)| opts.iter().any(|o| o == controller))?;
        let own = own_path(controller)?;
        Some(mp.join(own.trim_start_matches('/')))
    };
    let (cpu, memory, blkio) = (v1_dir("cpu"), v1_dir("memory"), v1_dir("blkio"));
    if cpu.is_some() || memory.is_some() || blkio.is_some() {
        return Hierarchy::V1 { cpu, memory, blkio };
    }
    if let Some(mp) = v2_mount {
        let own = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let dir = mp.join(own.trim_start_matches('/'));
        if dir.join("cgroup.controllers").is_file() || !mp.join("cgroup.controllers").exists() {
            return Hierarchy::V2 { own: dir };
        }
    }
    Hierarchy::Unavailable(
        "no cgroup v1 controller (cpu, memory, blkio) or cgroup v2 hierarchy is mounted".into(),
    )
}

/// The cgroup of one run: its directories, joined by the child before exec.
#[derive(Debug, Default)]
pub struct RunCgroup {
    dirs: Vec<PathBuf>,
    /// `DIR/cgroup.procs` of each directory, ready for the child (no allocation after fork).
    procs: Vec<CString>,
}

impl RunCgroup {
    /// The `cgroup.procs` paths the child writes `0` to.
    pub fn procs_paths(&self) -> Vec<CString> {
        self.procs.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Kills what is left in the cgroup and removes it. Every process found there belongs to this
    /// run: only the run's child joined it.
    pub async fn remove(self) {
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if dir.exists() {
                tracing::warn!(dir = %dir.display(), "could not remove a run's cgroup");
            }
        }
    }
}

/// Creates the run's cgroup and writes its limits. Returns it (possibly empty) and the notes for
/// the run record.
pub fn prepare(limits: &CgroupLimits, run_id: Uuid) -> (RunCgroup, Vec<String>) {
    if limits.is_empty() {
        return (RunCgroup::default(), Vec::new());
    }
    prepare_in(hierarchy(), limits, run_id)
}

pub fn prepare_in(h: &Hierarchy, limits: &CgroupLimits, run_id: Uuid) -> (RunCgroup, Vec<String>) {
    let mut cg = RunCgroup::default();
    let mut applied: Vec<String> = Vec::new();
    let mut missed: Vec<String> = Vec::new();
    let name = run_id.to_string();
    match h {
        Hierarchy::Unavailable(why) => {
            return (cg, vec![format!("cgroup limits not applied: {why}")]);
        }
        Hierarchy::V1 { cpu, memory, blkio } => {
            let mut cpu_w = Vec::new();
            if limits.cpu_shares != 0 {
                cpu_w.push(("cpu.shares", limits.cpu_shares.to_string()));
            }
            if limits.cpu_quota_us != 0 {
                cpu_w.push(("cpu.cfs_period_us", "100000".to_string()));
                cpu_w.push(("cpu.cfs_quota_us", limits.cpu_quota_us.to_string()));
            }
            let mut mem_w = Vec::new();
            if limits.memory_limit != 0 {
                mem_w.push(("memory.limit_in_bytes", limits.memory_limit.to_string()));
            }
            if limits.memory_sw_limit != 0 {
                mem_w.push((
                    "memory.memsw.limit_in_bytes",
                    limits.memory_sw_limit.to_string(),
                ));
            }
            let mut io_w = Vec::new();
            if limits.io_read_limit != 0 || limits.io_write_limit != 0 {
                match device_number(&limits.io_limit_device) {
                    Ok(dev) => {
                        if limits.io_read_limit != 0 {
                            let v = format!("{dev} {}", limits.io_read_limit);
                            io_w.push(("blkio.throttle.read_bps_device", v));
                        }
                        if limits.io_write_limit != 0 {
                            let v = format!("{dev} {}", limits.io_write_limit);
                            io_w.push(("blkio.throttle.write_bps_device", v));
                        }
                    }
                    Err(e) => missed.push(format!("blkio: {e}")),
                }
            }
            for (base, ctrl, writes) in [
                (cpu, "cpu", cpu_w),
                (memory, "memory", mem_w),
                (blkio, "blkio", io_w),
            ] {
                if writes.is_empty() {
                    continue;
                }
                let Some(base) = base else {
                    missed.push(format!("{ctrl}: controller not mounted"));
                    continue;
                };
                let dir = base.join("op-agent").join(&name);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    missed.push(format!("{ctrl}: cannot create {}: {e}", dir.display()));
                    continue;
                }
                write_all(&dir, writes, &mut applied, &mut missed);
                cg.add(dir);
            }
        }
        Hierarchy::V2 { own } => {
            let dir = own.join(format!("op-agent-{name}"));
            let mut writes: Vec<(&str, String)> = Vec::new();
            if limits.cpu_shares != 0 {
                writes.push((
                    "cpu.weight",
                    shares_to_weight(limits.cpu_shares).to_string(),
                ));
            }
            if limits.cpu_quota_us != 0 {
                writes.push(("cpu.max", format!("{} 100000", limits.cpu_quota_us)));
            }
            if limits.memory_limit != 0 {
                writes.push(("memory.max", limits.memory_limit.to_string()));
            }
            if limits.memory_sw_limit != 0 {
                let swap = limits.memory_sw_limit.saturating_sub(limits.memory_limit);
                writes.push(("memory.swap.max", swap.to_string()));
            }
            if limits.io_read_limit != 0 || limits.io_write_limit != 0 {
                match device_number(&limits.io_limit_device) {
                    Ok(dev) => {
                        let mut v = dev;
                        if limits.io_read_limit != 0 {
                            v.push_str(&format!(" rbps={}", limits.io_read_limit));
                        }
                        if limits.io_write_limit != 0 {
                            v.push_str(&format!(" wbps={}", limits.io_write_limit));
                        }
                        writes.push(("io.max", v));
                    }
                    Err(e) => missed.push(format!("io: {e}")),
                }
            }
            match std::fs::create_dir_all(&dir) {
                Ok(()) => {
                    write_all(&dir, writes, &mut applied, &mut missed);
                    cg.add(dir);
                }
                Err(e) => missed.push(format!("cannot create {}: {e}", dir.display())),
            }
        }
    }
    let mut notes = Vec::new();
    if !applied.is_empty() {
        notes.push(format!("cgroup limits applied: {}", applied.join(", ")));
    }
    if !missed.is_empty() {
        notes.push(format!("cgroup limits not applied: {}", missed.join("; ")));
    }
    (cg, notes)
}

impl RunCgroup {
    fn add(&mut self, dir: PathBuf) {
        if let Ok(p) = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        ) {
            self.procs.push(p);
        }
        self.dirs.push(dir);
    }
}

fn write_all(
    dir: &Path,
    writes: Vec<(&str, String)>,
    applied: &mut Vec<String>,
    missed: &mut Vec<String>,
) {
    for (file, value) in writes {
        match std::fs::write(dir.join(file), &value) {
            Ok(()) => applied.push(format!("{file}={value}")),
            Err(e) => missed.push(format!("{file}: {e}")),
        }
    }
}

/// `/dev/sdb` → `8:16`; `8:16` as given.
fn device_number(device: &str) -> Result<String, String> {
    if device.is_empty() {
        return Err("IOLimitDevice is empty".into());
    }
    if let Some((a, b)) = device.split_once(':')
        && a.parse::<u32>().is_ok()
        && b.parse::<u32>().is_ok()
    {
        return Ok(device.to_string());
    }
    let meta = std::fs::metadata(device).map_err(|e| format!("device {device}: {e}"))?;
    let rdev = meta.rdev();
    if rdev == 0 {
        return Err(format!("{device} is not a device"));
    }
    Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

/// v1 `cpu.shares` (2..262144, default 1024) → v2 `cpu.weight` (1..10000, default 100), the
/// mapping the kernel documentation and runc use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Joins the calling process to each cgroup; for the child, between fork and exec.
///
/// # Safety
/// Only async-signal-safe calls (open, write, close); `paths` was built before the fork.
pub unsafe fn join_in_child(paths: &[CString]) -> std::io::Result<()> {
    for p in paths {
        // SAFETY: `p` is a valid NUL-terminated path; the fd is closed before returning.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: writing one byte from a static buffer to the fd just opened.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the fd this function opened.
        unsafe { libc::close(fd) };
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
    const V1_SELF: &str = "8:blkio:/\n4:memory:/jobs/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn detects_v1_with_the_agents_own_groups() {
        match detect(V1_SELF, V1_MOUNTS) {
            Hierarchy::V1 { cpu, memory, blkio } => {
                assert_eq!(cpu.unwrap(), PathBuf::from("/sys/fs/cgroup/cpu"));
                assert_eq!(
                    memory.unwrap(),
                    PathBuf::from("/sys/fs/cgroup/memory/jobs/abc")
                );
                assert_eq!(blkio.unwrap(), PathBuf::from("/sys/fs/cgroup/blkio"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn detects_v2_and_nothing() {
        let mounts = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        match detect("0::/system.slice/op-agent.service\n", mounts) {
            Hierarchy::V2 { own } => {
                assert_eq!(
                    own,
                    PathBuf::from("/sys/fs/cgroup/system.slice/op-agent.service")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(detect("", ""), Hierarchy::Unavailable(_)));
    }

    #[test]
    fn weight_mapping() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn unavailable_is_a_note_not_an_error() {
        let limits = CgroupLimits {
            memory_limit: 1 << 20,
            ..CgroupLimits::default()
        };
        let (cg, notes) = prepare_in(
            &Hierarchy::Unavailable("none here".into()),
            &limits,
            Uuid::nil(),
        );
        assert!(cg.is_empty());
        assert_eq!(
            notes,
            vec!["cgroup limits not applied: none here".to_string()]
        );
    }

    #[test]
    fn writes_v1_files_into_a_run_directory() {
        // A plain directory stands in for the controller mounts: the files are written as given.
        let tmp = tempfile::tempdir().unwrap();
        let h = Hierarchy::V1 {
            cpu: Some(tmp.path().join("cpu")),
            memory: Some(tmp.path().join("memory")),
            blkio: None,
        };
        let limits = CgroupLimits {
            cpu_shares: 512,
            memory_limit: 1 << 20,
            io_read_limit: 100,
            io_limit_device: "8:16".into(),
            ..CgroupLimits::default()
        };
        let id = Uuid::nil();
        let (cg, notes) = prepare_in(&h, &limits, id);
        let run_dir = tmp.path().join("cpu/op-agent").join(id.to_string());
        assert_eq!(
            std::fs::read_to_string(run_dir.join("cpu.shares")).unwrap(),
            "512"
        );
        assert_eq!(cg.procs_paths().len(), 2);
        assert_eq!(
            notes[0],
            "cgroup limits applied: cpu.shares=512, memory.limit_in_bytes=1048576"
        );
        assert_eq!(
            notes[1],
            "cgroup limits not applied: blkio: controller not mounted"
        );
    }
}
