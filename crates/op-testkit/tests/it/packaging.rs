//! The Debian packages, installed for real (issue 12): `scripts/package-deb` builds op-manager,
//! op-agent and agentcli from the binaries under test, and `dpkg -i` installs them into a
//! throwaway root. The root is a copy-on-write overlay of this machine's own `/` (so it has a
//! real dpkg database, adduser and systemd-analyze), entered with `unshare -m` + `chroot`; every
//! write lands in a temp dir and vanishes with it.
//!
//! Inside, `packaging.sh` (next to this file) checks the files, the users, the modes
//! and the units (`systemd-analyze verify`), starts both daemons on the shipped configs (the
//! manager as its own user), upgrades to a newer version and checks that config edits and state
//! survived, removes (config stays) and purges (config goes, state stays). What it cannot cover:
//! systemd is not PID 1 in the throwaway root, so `systemctl enable/start` in the maintainer
//! scripts is skipped (they test for /run/systemd/system, as Debian's helpers do), and the
//! units' hardening is verified for syntax, not exercised.
//!
//! Needs root (mount namespaces, chroot); CI runs as root.

use std::path::Path;
use std::process::Command;

use crate::metrics::repo_root;

/// The steps run inside the throwaway root.
const SCRIPT: &str = include_str!("packaging.sh");

fn build_debs(version: &str, out: &Path) {
    let bin_dir = op_testkit::bin_dir();
    let status = Command::new(repo_root().join("scripts/package-deb"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out)
        .arg("--version")
        .arg(version)
        .arg("--fast")
        .status()
        .expect("run scripts/package-deb");
    assert!(status.success(), "scripts/package-deb --version {version}");
}

#[test]
fn debian_packages_install_upgrade_and_remove_in_a_throwaway_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs packages into a throwaway root and needs root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    let merged = tmp.path().join("merged");
    let stage = upper.join("opkg-test");
    for d in [&upper, &work, &merged, &stage] {
        std::fs::create_dir_all(d).unwrap();
    }
    build_debs("0.1.0", &stage.join("v1"));
    build_debs("0.1.1", &stage.join("v2"));
    let script = stage.join("install-upgrade-remove.sh");
    std::fs::write(&script, SCRIPT).unwrap();

    // The overlay lives in a private mount namespace: nothing leaks out, even if we crash.
    let m = merged.display();
    let enter = format!(
        "set -e
         mount -t overlay overlay -o lowerdir=/,upperdir={u},workdir={w} {m}
         mount -t proc proc {m}/proc
         mount --rbind /dev {m}/dev
         mount -t tmpfs tmpfs {m}/run
         exec chroot {m} /bin/sh /opkg-test/install-upgrade-remove.sh",
        u = upper.display(),
        w = work.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &enter])
        .output()
        .expect("run unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("ALL-OK"),
        "package test in the throwaway root failed:\n{text}"
    );
    // The host saw none of it.
    assert!(!Path::new("/opkg-test").exists());
}
