//! `scripts/quickstart` as a new user runs it, twice (issue 17, item 12): the second run used to
//! fail every time (the old manager still held the data dir), left the agent stopped and filled
//! `manager.log` with NUL bytes. It must restart both, and say where the console is.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use op_testkit::{PortLease, bin_dir, lease, lease_consecutive, wait_until};

use crate::support::LONG;

/// The quick start with the test's binaries, ports and home; stops what it started on drop.
struct Quickstart {
    home: tempfile::TempDir,
    port: u16,
    agent_port: u16,
    /// The API's port and raft's (the next one), and the agent's: leased below the ephemeral
    /// range, where another test's connection cannot take one between the lease and the start.
    _leases: Vec<PortLease>,
}

impl Quickstart {
    fn run(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/quickstart");
        Command::new(script)
            .args(args)
            .env("OP_QUICKSTART_BIN", bin_dir())
            .env("OP_QUICKSTART_HOME", self.home.path())
            .env("OP_QUICKSTART_PORT", self.port.to_string())
            .env("OP_QUICKSTART_AGENT_PORT", self.agent_port.to_string())
            .output()
            .unwrap()
    }

    fn start(&self) -> String {
        let out = self.run(&[]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "quickstart failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join("quickstart").join(name)
    }

    fn pid(&self, who: &str) -> i32 {
        std::fs::read_to_string(self.path(&format!("{who}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        self.run(&["stop"]);
    }
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test]
async fn running_the_quickstart_again_restarts_both_and_names_the_console() {
    let mut leases = lease_consecutive(2);
    leases.push(lease());
    let q = Quickstart {
        home: tempfile::tempdir().unwrap(),
        port: leases[0].port,
        agent_port: leases[2].port,
        _leases: leases,
    };
    let first = q.start();
    let console = format!("http://127.0.0.1:{}/ui", q.port);
    assert!(first.contains(&console), "{first}");
    assert!(first.contains("quickstart/manager/admin.token"), "{first}");
    let (manager, agent) = (q.pid("manager"), q.pid("agent"));

    let second = q.start();
    assert!(second.contains("Ready"), "{second}");
    assert!(!alive(manager) && !alive(agent), "the old pair was stopped");
    let (manager2, agent2) = (q.pid("manager"), q.pid("agent"));
    assert!(alive(manager2) && alive(agent2), "the new pair runs");
    let log = std::fs::read(q.path("manager.log")).unwrap();
    assert!(!log.contains(&0), "manager.log has NUL bytes");
    // The data dir of the quick start is private too (issue 17, item 14).
    let mode = std::fs::metadata(q.path("manager"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // A word the script does not know is refused and leaves the pair running.
    let out = q.run(&["stpo"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("usage: scripts/quickstart [stop]"),
        "{out:?}"
    );
    assert!(
        alive(manager2) && alive(agent2),
        "a refused word stopped the pair"
    );

    let out = q.run(&["stop"]);
    assert!(out.status.success());
    wait_until(LONG, "both stopped", || async {
        !alive(manager2) && !alive(agent2)
    })
    .await;
}
