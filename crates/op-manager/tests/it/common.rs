//! Test harness: start managers, play agents, wait for conditions with deadlines.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use op_client::Client;
use op_manager::config::{ConfigArgs, RawConfig};
use op_manager::{Config, Listeners, Running};
use op_proto::agent::{DesiredState, Heartbeat, RegisterRequest};
use op_proto::{API_VERSION, RunRecord, RunStatus, Trigger};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Generous: the suite must pass on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns Some, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_secret(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_string()
}

/// A manager running in this process.
pub struct TestManager {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin_token: String,
    pub agent_token: String,
    shutdown: CancellationToken,
    running: Option<Running>,
}

impl TestManager {
    pub async fn start() -> TestManager {
        TestManager::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut ConfigArgs)) -> TestManager {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ConfigArgs {
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            raft_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ConfigArgs::default()
        };
        tune(&mut args);
        let config = Config::resolve(&args, RawConfig::default()).unwrap();
        let listeners = Listeners::bind(&config).unwrap();
        let shutdown = CancellationToken::new();
        let running = op_manager::start(config, listeners, shutdown.clone())
            .await
            .unwrap();
        TestManager {
            url: running.api_url.clone(),
            admin_token: read_secret(dir.path(), "admin.token"),
            agent_token: read_secret(dir.path(), "agent.token"),
            dir,
            shutdown,
            running: Some(running),
        }
    }

    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.url, Some(token)).unwrap()
    }

    pub fn admin(&self) -> Client {
        self.client(&self.admin_token)
    }

    pub fn agent(&self) -> Client {
        self.client(&self.agent_token)
    }

    /// Stops the manager and waits until it has shut down.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(DEADLINE, r.wait())
                .await
                .expect("manager stops in time")
                .unwrap();
        }
    }
}

impl Drop for TestManager {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real `op-manager` binary, for restarts, SIGTERM and kill -9.
pub struct ManagerProcess {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
}

impl ManagerProcess {
    pub fn spawn(dir: &Path, extra: &[&str]) -> ManagerProcess {
        #[allow(clippy::disallowed_methods)] // tests start the binary under test
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_op-manager"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("op-manager prints its listening line");
        let url = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .unwrap_or_else(|| panic!("no api= in {line:?}"))
            .to_string();
        ManagerProcess {
            child,
            url,
            dir: dir.to_path_buf(),
        }
    }

    pub fn client(&self, file: &str) -> Client {
        Client::new(&self.url, Some(&read_secret(&self.dir, file))).unwrap()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "op-manager exited with {status}");
    }

    /// kill -9: no chance to flush or close anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        wait_exit(&mut self.child);
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "op-manager did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulated agent: a node id, a hostname and one IP (127.0.0.N).
#[derive(Debug, Clone)]
pub struct FakeAgent {
    pub node_id: Uuid,
    pub hostname: String,
    pub ip: IpAddr,
    /// The node credential issued when it enrolled.
    pub token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl FakeAgent {
    pub fn new(n: u8) -> FakeAgent {
        FakeAgent {
            node_id: Uuid::new_v4(),
            hostname: format!("node-{n}"),
            ip: format!("127.0.0.{n}").parse().unwrap(),
            token: Default::default(),
        }
    }

    /// `base` presenting this node's own credential (once enrolled).
    pub fn client(&self, base: &Client) -> Client {
        match self.token.lock().unwrap().as_deref() {
            Some(t) => base.with_token(t),
            None => base.clone(),
        }
    }

    /// Registers (enrolling with `client`'s token the first time) and keeps the node credential.
    pub async fn register(&self, client: &Client) {
        let resp = self
            .client(client)
            .register(&RegisterRequest {
                api_version: API_VERSION,
                node_id: self.node_id,
                hostname: self.hostname.clone(),
                ips: vec![self.ip],
                labels: Default::default(),
                agent_version: "0.1.0-test".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                machine_id: String::new(),
                reset: None,
                capabilities: Vec::new(),
            })
            .await
            .unwrap();
        if let Some(t) = resp.node_token {
            *self.token.lock().unwrap() = Some(t);
        }
    }

    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            node_id: self.node_id,
            agent_version: "0.1.0-test".into(),
            load: None,
            running: vec![],
            packages: vec![],
            stats: Default::default(),
            degraded: None,
            sent_at: None,
            received: Vec::new(),
            facts: None,
            peer_url: None,
        }
    }

    pub async fn sync(&self, client: &Client, index: u64, wait: u64) -> DesiredState {
        self.client(client)
            .sync(index, wait, &self.heartbeat())
            .await
            .unwrap()
    }

    /// Job names in this agent's desired state.
    pub async fn job_names(&self, client: &Client) -> Vec<String> {
        let mut names: Vec<String> = self
            .sync(client, 0, 0)
            .await
            .jobs
            .into_iter()
            .map(|j| j.spec.name)
            .collect();
        names.sort();
        names
    }

    pub fn run(&self, job: &str, revision: u64, trigger: Trigger, status: RunStatus) -> RunRecord {
        let now = chrono::Utc::now();
        RunRecord {
            run_id: Uuid::now_v7(),
            job: job.into(),
            job_revision: revision,
            node_id: self.node_id,
            hostname: self.hostname.clone(),
            ips: vec![self.ip],
            trigger,
            attempt: 0,
            invocation_id: None,
            params: Default::default(),
            command: "ls -l /tmp".into(),
            planned_at: Some(now),
            started_at: Some(now),
            ended_at: Some(now),
            status,
            exit_code: Some(0),
            signal: None,
            error: None,
            output: "total 0\n".into(),
            output_truncated: false,
            output_bytes: 8,
            stderr_tail: String::new(),
            rusage: None,
            notes: Vec::new(),
        }
    }
}

/// Saves a task file given as JSON text.
pub async fn save(client: &Client, task: serde_json::Value) -> op_proto::api::SaveJobResponse {
    let name = task["JobName"].as_str().unwrap().to_string();
    client
        .save_job_text(&name, &task.to_string())
        .await
        .unwrap()
}

/// A seed task file from op-proto's fixtures.
pub fn seed_task(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../op-proto/tests/data/seed")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
