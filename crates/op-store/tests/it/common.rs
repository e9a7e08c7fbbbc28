//! Builders shared by the store tests.

use std::net::IpAddr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use op_proto::api::Scope;
use op_proto::{JobSpec, RunRecord, RunStatus, Trigger};
use op_store::{Command, CommandResult, Entry, NewToken, NodeRegistration, Store};
use uuid::Uuid;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap()
}

pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

/// A store in a temp dir, with a log index counter.
pub struct TestStore {
    pub store: Store,
    pub index: u64,
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state.db")).unwrap();
        TestStore {
            store,
            index: 0,
            dir,
        }
    }

    pub fn apply(&mut self, command: Command) -> CommandResult {
        self.index += 1;
        let (mut results, _) = self
            .store
            .apply_batch(
                &[Entry {
                    index: self.index,
                    command: Some(&command),
                }],
                &format!("{{\"index\":{}}}", self.index),
                None,
            )
            .unwrap();
        results.remove(0)
    }
}

pub fn node_id(n: u8) -> Uuid {
    Uuid::from_u128(0x1000 + u128::from(n))
}

/// A plain heartbeat of node `n`, seen at `seen_secs`.
pub fn beat(n: u8, seen_secs: i64) -> op_store::NodeBeat {
    op_store::NodeBeat {
        node_id: node_id(n),
        seen_at: at(seen_secs),
        agent_version: "0.1.0".into(),
        load: None,
        running: vec![],
        packages: vec![],
        stats: Default::default(),
        degraded: None,
        clock_skew_ms: None,
    }
}

pub fn register(n: u8, at_secs: i64) -> Command {
    Command::RegisterNode {
        registration: Box::new(NodeRegistration {
            node_id: node_id(n),
            hostname: format!("node-{n}"),
            ips: vec![format!("127.0.0.{n}").parse::<IpAddr>().unwrap()],
            labels: Default::default(),
            agent_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            machine_id: String::new(),
            reset: None,
            capabilities: Vec::new(),
        }),
        at: at(at_secs),
        actor: "agent".into(),
        enroll: None,
    }
}

pub fn save(spec: JobSpec, at_secs: i64) -> Command {
    Command::SaveJob {
        spec: Box::new(spec),
        at: at(at_secs),
        actor: "admin".into(),
    }
}

pub fn cron_job(name: &str) -> JobSpec {
    let mut spec = JobSpec::new(name, "echo hi");
    spec.cron_expr = "*/5 * * * * * *".into();
    spec
}

pub fn once_job(name: &str) -> JobSpec {
    let mut spec = JobSpec::new(name, "ls -l /tmp");
    spec.once_job = true;
    spec
}

pub fn run(n: u8, job: &str, revision: u64, started_secs: i64, status: RunStatus) -> RunRecord {
    RunRecord {
        run_id: Uuid::now_v7(),
        job: job.into(),
        job_revision: revision,
        node_id: node_id(n),
        hostname: format!("node-{n}"),
        ips: vec![format!("127.0.0.{n}").parse().unwrap()],
        trigger: Trigger::Cron,
        attempt: 0,
        invocation_id: None,
        params: Default::default(),
        command: "echo hi".into(),
        planned_at: Some(at(started_secs)),
        started_at: Some(at(started_secs)),
        ended_at: Some(at(started_secs + 1)),
        status,
        exit_code: Some(0),
        signal: None,
        error: None,
        output: "hi\n".into(),
        output_truncated: false,
        output_bytes: 3,
        stderr_tail: String::new(),
        rusage: None,
        notes: Vec::new(),
    }
}

/// Registers nodes `nodes` and saves cron jobs `jobs` selecting every host, so that runs of
/// those jobs from those nodes are stored (a run of a job never given to its node is refused).
pub fn given(s: &mut TestStore, nodes: &[u8], jobs: &[&str]) {
    for &n in nodes {
        s.apply(register(n, 0));
    }
    for job in jobs {
        s.apply(save(cron_job(job), 0));
    }
}

pub fn ingest(n: u8, runs: Vec<RunRecord>, at_secs: i64) -> Command {
    Command::IngestRuns {
        node_id: node_id(n),
        at: at(at_secs),
        runs,
    }
}

/// A store with something in every table: 3 nodes (node-4 Left), a cron and a once-job, 20 runs,
/// a token, two versions of package `test.py` rolled back to the first, audit entries, and raft
/// metadata.
pub fn fill(s: &mut TestStore) {
    s.apply(Command::InitCluster {
        cluster_id: "c-1".into(),
        at: at(0),
    });
    for n in [2, 3, 4] {
        s.apply(register(n, 0));
    }
    s.apply(save(cron_job("cron"), 1));
    s.apply(save(once_job("once"), 2));
    s.apply(ingest(
        2,
        (0..20)
            .map(|i| run(2, "cron", 1, i, RunStatus::Ok))
            .collect(),
        30,
    ));
    s.apply(Command::CreateToken {
        token: NewToken {
            id: "abc".into(),
            name: "viewer".into(),
            scope: Scope::Viewer,
            secret_sha256: "11".repeat(32),
            expires_at: Some(at(3600)),
            node_id: None,
            policy: None,
        },
        at: at(3),
        actor: "admin".into(),
    });
    s.apply(Command::ForgetNode {
        node_id: node_id(4),
        at: at(4),
        actor: "admin".into(),
    });
    for (c, secs) in [('a', 5), ('b', 6)] {
        s.apply(Command::AddPackageVersion {
            name: "test.py".into(),
            sha256: c.to_string().repeat(64),
            size: 100,
            deploy_dir: Some("/data/op-agent/src".into()),
            at: at(secs),
            actor: "admin".into(),
            target: Default::default(),
        });
    }
    s.apply(Command::RollbackPackage {
        name: "test.py".into(),
        version: None,
        at: at(7),
        actor: "admin".into(),
    });
    // Raft metadata rides with the last batch.
    s.index += 1;
    s.store
        .apply_batch(
            &[Entry {
                index: s.index,
                command: None,
            }],
            "{\"last\":true}",
            Some("{\"membership\":1}"),
        )
        .unwrap();
}
