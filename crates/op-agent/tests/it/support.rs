//! Test harness: the real `op-agent` binary in its own temp dir, on `127.0.0.1:0`.
//!
//! [`Agent`] starts the binary with a jobs dir, reads the bound address from its first stdout
//! line, and on drop SIGKILLs the agent and every process its jobs left behind (found by a
//! marker variable in their environment, never by name). [`wait_until`] polls a condition with
//! a deadline: tests wait for facts, they do not sleep for a guessed time.

#![allow(clippy::disallowed_methods)] // Tests start the binary under test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use op_proto::RunRecord;
use serde_json::Value;

pub const USER: &str = "opuser";
pub const PASS: &str = "w95fa8cw403fc220db1f4csde2130bsfd";
pub const TOKEN: &str = "test-bearer-token";

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
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        if state == Some('Z') {
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

/// True when `pid` exists in /proc at all (a zombie counts: it has not been reaped).
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Where the agent's stderr goes.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum StderrTo {
    /// `agent-N.log` in the temp dir, shown when a test fails.
    #[default]
    File,
    /// A pipe the test holds the read end of; [`Agent::close_stderr_reader`] makes it break.
    Pipe,
}

#[derive(Default)]
pub struct Options {
    pub extra_args: Vec<String>,
    /// Managers to connect to; a managed agent has no jobs dir (the two are refused together).
    pub managers: Vec<String>,
    pub stderr: StderrTo,
}

/// A running agent (or one that was stopped and can be started again on the same state).
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub jobs: PathBuf,
    pub addr: SocketAddr,
    /// Every job process carries `OPTEST_MARK=<mark>`: how leftovers are found.
    pub mark: String,
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    /// The read end of the stderr pipe ([`StderrTo::Pipe`]).
    stderr_reader: Option<std::os::fd::OwnedFd>,
    options: Options,
    pub http: reqwest::Client,
    starts: u32,
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let mark = uuid::Uuid::new_v4().to_string();
        let mut agent = Agent {
            dir,
            jobs,
            addr: "127.0.0.1:0".parse().unwrap(),
            mark,
            child: None,
            _stdout: None,
            stderr_reader: None,
            options,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            starts: 0,
        };
        agent.launch();
        agent
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn launch(&mut self) {
        self.starts += 1;
        let stderr = match self.options.stderr {
            StderrTo::File => Stdio::from(
                std::fs::File::create(self.path(&format!("agent-{}.log", self.starts))).unwrap(),
            ),
            StderrTo::Pipe => {
                // CLOEXEC: the agent must not inherit the read end (it would hold the pipe open).
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
                self.stderr_reader = Some(read);
                Stdio::from(write)
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_op-agent"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--deploy-dir")
            .arg(self.path("deploy"))
            .args(if self.options.managers.is_empty() {
                vec!["--jobs-dir".into(), self.jobs.display().to_string()]
            } else {
                self.options
                    .managers
                    .iter()
                    .flat_map(|m| ["--manager".to_string(), m.clone()])
                    .collect()
            })
            .arg("--node-name")
            .arg("test-node")
            .arg("--ip")
            .arg("10.9.8.7")
            .arg("--auth-user")
            .arg(USER)
            .arg("--auth-password")
            .arg(PASS)
            .arg("--log-level")
            .arg("debug")
            .args(&self.options.extra_args)
            .env("OPTEST_MARK", &self.mark)
            // A secret in the agent's own environment: jobs must not see it.
            .env("OP_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // Settings from the environment of whoever runs the tests must not leak in.
        for (k, _) in std::env::vars() {
            if k.starts_with("OP_") && k != "OP_TOKEN" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("start op-agent");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent did not start: {line:?}\n{}", self.log());
        };
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// Closes the read end of the agent's stderr pipe: its next log write fails with EPIPE.
    pub fn close_stderr_reader(&mut self) {
        self.stderr_reader = None;
    }

    /// Everything the agent logged (all starts).
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.path(&format!("agent-{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    /// `kill -9` the agent (its jobs, in their own sessions, keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self._stdout = None;
    }

    /// SIGTERM, then waits for the exit (at most `limit`); returns the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self._stdout = None;
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "agent did not exit within {limit:?} of SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the binary again on the same state and jobs dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the agent first");
        self.launch();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Writes a task file atomically (temp file + rename), so the agent never reads half a file.
    pub fn write_job(&self, file: &str, body: &Value) {
        let tmp = self.jobs.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(body).unwrap()).unwrap();
        std::fs::rename(&tmp, self.jobs.join(format!("{file}.json"))).unwrap();
    }

    pub fn remove_job(&self, file: &str) {
        std::fs::remove_file(self.jobs.join(format!("{file}.json"))).unwrap();
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .basic_auth(USER, Some(PASS))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .basic_auth(USER, Some(PASS))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Runs of a job, newest first.
    pub async fn runs(&self, job: &str) -> Vec<RunRecord> {
        serde_json::from_value(
            self.get_json(&format!("/v1/runs?job={job}&limit=1000"))
                .await,
        )
        .unwrap()
    }

    pub async fn run(&self, id: &str) -> RunRecord {
        serde_json::from_value(self.get_json(&format!("/v1/runs/{id}")).await).unwrap()
    }

    pub async fn status(&self) -> Value {
        self.get_json("/v1/status").await
    }

    /// The revision the agent holds for `job`, if it holds it.
    pub async fn job_revision(&self, job: &str) -> Option<u64> {
        let status = self.status().await;
        status["jobs"]
            .as_array()?
            .iter()
            .find(|j| j["name"] == job)
            .and_then(|j| j["revision"].as_u64())
    }

    /// Invokes a job without waiting; returns the run id.
    pub async fn invoke_async(&self, job: &str, params: &Value) -> String {
        let (status, body) = self
            .post_json(&format!("/v1/jobs/{job}/run?wait=false"), params)
            .await;
        assert_eq!(status, 202, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    }

    /// Invokes a job and waits for its record.
    pub async fn invoke_sync(&self, job: &str, params: &Value) -> RunRecord {
        let (status, body) = self
            .post_json(&format!("/v1/jobs/{job}/run?wait=true"), params)
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Waits until the agent holds `job` (any revision, or `revision`).
    pub async fn wait_job(&self, job: &str, revision: Option<u64>) {
        wait_until(
            Duration::from_secs(20),
            &format!("agent holds job {job} rev {revision:?}"),
            || async {
                match (self.job_revision(job).await, revision) {
                    (Some(_), None) => true,
                    (Some(r), Some(want)) => r == want,
                    _ => false,
                }
            },
        )
        .await;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        for pid in processes_with_env("OPTEST_MARK", &self.mark) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}
