//! Test harness for cross-component scenarios: the real `op-manager` and `op-agent` binaries, each
//! in its own temp dir, on `127.0.0.1:0`.
//!
//! [`Manager`] and [`Agent`] start a process, read the address it printed, and kill it on drop
//! (an agent's leftover job processes too: every agent carries a marker in its environment that
//! its jobs inherit, so they are found by marker, never by name). Both can be `kill -9`ed,
//! stopped with SIGSTOP and started again on the same state. [`wait_until`] polls a condition
//! until a deadline: tests wait for facts, never for a guessed time.
//!
//! The binaries are found next to the test executable (`target/debug`); `scripts/test` builds
//! them before running the tests.

#![allow(clippy::disallowed_methods)] // The harness starts the binaries under test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod cluster;
mod ports;

pub use cluster::{Cluster, FAST_RAFT};
pub use nix::sys::signal::Signal;
pub use ports::{PortLease, lease, lease_consecutive};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use op_client::Client;

/// Where the workspace's binaries are: the directory of the running test, or its parent when
/// the test runs from `target/*/deps`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, with a clear panic when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing; build the binaries first (scripts/test does: cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A command with every `OP_*` variable of the caller's environment removed, so a developer's
/// settings cannot leak into a test.
fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("OP_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Reads the first stdout line of a starting process; returns it without the newline.
fn first_line(child: &mut Child, log: &Path) -> (String, BufReader<ChildStdout>) {
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    if line.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "process exited before printing its address; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    (line.trim().to_string(), stdout)
}

fn signal(child: &Option<Child>, sig: Signal) {
    if let Some(c) = child {
        let _ = kill(Pid::from_raw(c.id() as i32), sig);
    }
}

/// The exit status of a child that has ended on its own, which is then forgotten (`None` while
/// it runs or when there is none).
fn reap(child: &mut Option<Child>, what: &str) -> Option<std::process::ExitStatus> {
    let status = child
        .as_mut()?
        .try_wait()
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"))?;
    *child = None;
    Some(status)
}

/// Settings of a manager to start.
#[derive(Debug, Clone, Default)]
pub struct ManagerOptions {
    /// Extra flags, e.g. `["--node-timeout", "2s"]`.
    pub args: Vec<String>,
    /// What [`Manager::client`] trusts and presents (for a manager serving TLS).
    pub client_tls: op_client::ClientTls,
}

/// Stderr for a daemon: its log file, or a pipe whose read end is already closed, so that every
/// write to it fails with EPIPE (a log shipper that went away).
fn stderr_to(log: &Path, dead: bool) -> Stdio {
    if dead {
        // CLOEXEC: no child may inherit the read end and keep the pipe alive.
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe for stderr");
        drop(read);
        Stdio::from(write)
    } else {
        Stdio::from(std::fs::File::create(log).expect("log file"))
    }
}

/// A running `op-manager` (or a stopped one that can be started again on the same data dir).
pub struct Manager {
    pub dir: tempfile::TempDir,
    pub api_url: String,
    pub raft_url: String,
    pub admin_token: String,
    pub agent_token: String,
    options: ManagerOptions,
    /// Stderr is a pipe nobody reads ([`Manager::start_with_dead_stderr`]).
    dead_stderr: bool,
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    starts: u32,
    /// The API port, the same on every start so agents find the manager again.
    port: ports::PortLease,
    /// The raft port, the same on every start so peers find the manager again.
    raft_port: ports::PortLease,
}

impl Manager {
    pub fn start() -> Manager {
        Manager::start_with(ManagerOptions::default())
    }

    pub fn start_with(options: ManagerOptions) -> Manager {
        Manager::launched(tempfile::tempdir().expect("temp dir"), options, false)
    }

    /// Starts a manager whose stderr is a pipe nobody reads: every log write fails with EPIPE.
    /// Its log is empty.
    pub fn start_with_dead_stderr(options: ManagerOptions) -> Manager {
        Manager::launched(tempfile::tempdir().expect("temp dir"), options, true)
    }

    /// Starts a manager whose data dir is `DIR/data` (which may already exist, e.g. as a mount
    /// point); its logs go to `DIR`.
    pub fn start_in(dir: tempfile::TempDir, options: ManagerOptions) -> Manager {
        Manager::launched(dir, options, false)
    }

    fn launched(dir: tempfile::TempDir, options: ManagerOptions, dead_stderr: bool) -> Manager {
        let mut m = Manager {
            dir,
            api_url: String::new(),
            raft_url: String::new(),
            admin_token: String::new(),
            agent_token: String::new(),
            options,
            dead_stderr,
            child: None,
            _stdout: None,
            starts: 0,
            port: ports::lease(),
            raft_port: ports::lease(),
        };
        m.launch();
        m
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = self.dir.path().join(format!("manager-{}.log", self.starts));
        let stderr = stderr_to(&log, self.dead_stderr);
        let mut cmd = clean_command(&bin("op-manager"));
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port.port))
            .arg("--raft-listen")
            .arg(format!("127.0.0.1:{}", self.raft_port.port))
            .args(&self.options.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("start op-manager");
        let (line, stdout) = first_line(&mut child, &log);
        // "op-manager listening api=URL raft=URL"
        for word in line.split_whitespace() {
            if let Some(v) = word.strip_prefix("api=") {
                self.api_url = v.to_string();
            } else if let Some(v) = word.strip_prefix("raft=") {
                self.raft_url = v.to_string();
            }
        }
        assert!(!self.api_url.is_empty(), "unexpected first line {line:?}");
        // A manager that joined a cluster has no token files: the cluster's first node wrote
        // them, and [`Cluster`] hands them to every member.
        let data_dir = self.data_dir();
        let read = |name: &str| {
            std::fs::read_to_string(data_dir.join(name))
                .ok()
                .map(|t| t.trim().to_string())
        };
        if let Some(t) = read("admin.token") {
            self.admin_token = t;
        }
        if let Some(t) = read("agent.token") {
            self.agent_token = t;
        }
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// This manager's raft node id (from `DATA_DIR/cluster.json`).
    pub fn node_id(&self) -> u64 {
        let text = std::fs::read_to_string(self.data_dir().join("cluster.json"))
            .expect("cluster.json in the data dir");
        let v: serde_json::Value = serde_json::from_str(&text).expect("cluster.json is JSON");
        v["node_id"].as_u64().expect("node_id in cluster.json")
    }

    /// An API client with the admin token.
    pub fn client(&self) -> Client {
        Client::with_tls(
            &self.api_url,
            Some(&self.admin_token),
            &self.options.client_tls,
        )
        .expect("client")
    }

    /// An API client with another token.
    pub fn client_with(&self, token: &str) -> Client {
        Client::with_tls(&self.api_url, Some(token), &self.options.client_tls).expect("client")
    }

    /// Everything the manager logged, over all starts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("manager-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id while it runs (for /proc measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` to the manager process.
    pub fn signal(&self, sig: Signal) {
        signal(&self.child, sig);
    }

    /// The exit status once the process has ended on its own (`None` while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = reap(&mut self.child, "op-manager")?;
        self._stdout = None;
        Some(status)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self._stdout = None;
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        signal(&self.child, Signal::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self._stdout = None;
    }

    /// Starts the manager again on the same data dir and API port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the manager first");
        self.launch();
    }

    pub fn pause(&self) {
        signal(&self.child, Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(&self.child, Signal::SIGCONT);
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- manager {} log (tail) ----\n{}",
                self.api_url,
                tail(&self.log(), 200)
            );
        }
    }
}

/// The last `n` lines of `text`: enough of a failing test's logs to see why, without flooding.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Settings of an agent to start.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node_name: String,
    /// The identity the agent reports (`--ip`); distinct per agent on one machine.
    pub ips: Vec<String>,
    pub labels: Vec<String>,
    /// Manager API URLs (`--manager`).
    pub managers: Vec<String>,
    /// The token the agent presents to managers.
    pub manager_token: Option<String>,
    pub extra_args: Vec<String>,
    /// `--state-dir`; by default `state` in the agent's temp dir.
    pub state_dir: Option<PathBuf>,
    /// Stderr is a pipe nobody reads (see [`stderr_to`]); the log is empty then.
    pub dead_stderr: bool,
    /// Environment variables set for the agent (`OP_*` of the test's own are removed).
    pub env: Vec<(String, String)>,
    /// Started as `op-agent guard ...`, as the shipped systemd unit does (self-upgrade).
    pub guarded: bool,
}

impl AgentOptions {
    pub fn new(node_name: &str, ip: &str) -> AgentOptions {
        AgentOptions {
            node_name: node_name.to_string(),
            ips: vec![ip.to_string()],
            labels: Vec::new(),
            managers: Vec::new(),
            manager_token: None,
            extra_args: Vec::new(),
            state_dir: None,
            dead_stderr: false,
            env: Vec::new(),
            guarded: false,
        }
    }

    /// Runs the agent under `op-agent guard`, which starts (and restores) the agent binary.
    pub fn guarded(mut self) -> AgentOptions {
        self.guarded = true;
        self
    }

    /// Connects the agent to every member of `cluster` (it starts at a random one).
    pub fn cluster(mut self, cluster: &Cluster) -> AgentOptions {
        self.managers = cluster.api_urls();
        self.manager_token = Some(cluster.agent_token.clone());
        self
    }

    /// Connects the agent to `manager` with the manager's agent token.
    pub fn manager(mut self, manager: &Manager) -> AgentOptions {
        self.managers = vec![manager.api_url.clone()];
        self.manager_token = Some(manager.agent_token.clone());
        self
    }

    /// Runs the agent on `dir` as its state dir.
    pub fn state_dir(mut self, dir: &Path) -> AgentOptions {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// Gives the agent a stderr nobody reads: every log write fails with EPIPE.
    pub fn dead_stderr(mut self) -> AgentOptions {
        self.dead_stderr = true;
        self
    }

    pub fn arg(mut self, arg: &str) -> AgentOptions {
        self.extra_args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> AgentOptions {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// Basic-auth user of every test agent's own API.
pub const AGENT_USER: &str = "opuser";
/// Basic-auth password of every test agent's own API.
pub const AGENT_PASSWORD: &str = "w95fa8cw403fc220db1f4csde2130bsfd";

/// A running `op-agent` (or a stopped one that can be started again on the same state dir).
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub options: AgentOptions,
    pub addr: String,
    /// Every process the agent starts carries `OPTESTKIT_MARK=<mark>`.
    pub mark: String,
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    starts: u32,
}

impl Agent {
    pub fn start(options: AgentOptions) -> Agent {
        let mut a = Agent {
            dir: tempfile::tempdir().expect("temp dir"),
            options,
            addr: String::new(),
            mark: uuid::Uuid::new_v4().to_string(),
            child: None,
            _stdout: None,
            starts: 0,
        };
        a.launch();
        a
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The agent's deploy dir (packages land here).
    pub fn deploy_dir(&self) -> PathBuf {
        self.path("deploy")
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = self.path(&format!("agent-{}.log", self.starts));
        let o = &self.options;
        let stderr = stderr_to(&log, o.dead_stderr);
        let mut cmd = clean_command(&bin("op-agent"));
        if o.guarded {
            cmd.arg("guard");
        }
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--state-dir")
            .arg(o.state_dir.clone().unwrap_or_else(|| self.path("state")))
            .arg("--deploy-dir")
            .arg(self.deploy_dir())
            .arg("--node-name")
            .arg(&o.node_name)
            .arg("--auth-user")
            .arg(AGENT_USER)
            .arg("--auth-password")
            .arg(AGENT_PASSWORD);
        for ip in &o.ips {
            cmd.arg("--ip").arg(ip);
        }
        if !o.labels.is_empty() {
            cmd.arg("--labels").arg(o.labels.join(","));
        }
        for m in &o.managers {
            cmd.arg("--manager").arg(m);
        }
        if let Some(t) = &o.manager_token {
            cmd.arg("--manager-token").arg(t);
        }
        cmd.args(&o.extra_args)
            .envs(o.env.iter().map(|(k, v)| (k, v)))
            .env("OPTESTKIT_MARK", &self.mark)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("start op-agent");
        let (line, stdout) = first_line(&mut child, &log);
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.addr = addr.to_string();
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// The agent's own API base URL.
    pub fn url(&self) -> String {
        let tls = self.options.extra_args.iter().any(|a| a == "--tls-cert");
        format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
    }

    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.path(&format!("agent-{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The pid of the process started (the guard, for a guarded agent).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` to the agent process.
    pub fn signal(&self, sig: Signal) {
        signal(&self.child, sig);
    }

    /// The exit status once the process has ended on its own (`None` while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = reap(&mut self.child, "op-agent")?;
        self._stdout = None;
        Some(status)
    }

    /// `kill -9` the agent; its jobs keep running in their own sessions.
    pub fn kill9(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self._stdout = None;
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        self.resume();
        signal(&self.child, Signal::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self._stdout = None;
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the agent first");
        self.launch();
    }

    /// Waits (at most `limit`) for the agent to exit on its own, as after a refused start, and
    /// returns how it ended. Panics if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("the agent was started");
        loop {
            if let Some(status) = child.try_wait().expect("wait for op-agent") {
                self.child = None;
                self._stdout = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "op-agent still running after {limit:?}:\n{}",
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `op-agent ARGS` to its end, e.g. `reset-identity --state-dir DIR`.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        clean_command(&bin("op-agent"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run op-agent")
    }

    pub fn pause(&self) {
        signal(&self.child, Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(&self.child, Signal::SIGCONT);
    }

    /// Pids of live processes started by this agent (found by the marker in their environment).
    pub fn job_processes(&self) -> Vec<i32> {
        processes_with_env("OPTESTKIT_MARK", &self.mark)
            .into_iter()
            .filter(|pid| Some(*pid as u32) != self.child.as_ref().map(Child::id))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        for pid in processes_with_env("OPTESTKIT_MARK", &self.mark) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- agent {} log (tail) ----\n{}",
                self.options.node_name,
                tail(&self.log(), 200)
            );
        }
    }
}

/// Pids of live (non-zombie) processes whose environment contains `var=value`.
pub fn processes_with_env(var: &str, value: &str) -> Vec<i32> {
    let needle = format!("{var}={value}");
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next())
            == Some('Z')
        {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}
