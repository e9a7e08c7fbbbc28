//! Persisted formats read from fixture files (ARCHITECTURE.md invariant 7): the cached job set,
//! the config file, and the run record as stored in the state database.

use std::path::PathBuf;
use std::time::Duration;

use op_agent::config::{Cli, Config, LogFormat, parse_file};
use op_agent::state::desired::{self, CachedJobs};
use op_proto::{RunRecord, RunStatus, Trigger};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn cached_job_set_fixture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(data("desired.json"), dir.path().join(desired::FILE)).unwrap();
    let cached: CachedJobs = desired::load(dir.path()).unwrap().unwrap();
    assert_eq!(cached.version, 1);
    assert_eq!(cached.jobs.len(), 2);
    assert_eq!(cached.jobs[0].revision, 2);
    assert_eq!(cached.jobs[0].spec.cron_expr, "*/5 * * * * * *");
    assert!(cached.jobs[1].spec.once_job);
    // Written back, it reads the same.
    desired::save(dir.path(), &cached).unwrap();
    assert_eq!(desired::load(dir.path()).unwrap().unwrap(), cached);
}

/// The cached job set was written under today's rules; a later agent with stricter rules still
/// loads it (DESIGN 13.7): an agent that cannot read its cache would run nothing until a manager
/// answers. Here the fixture's jobs are made to break today's rules instead.
#[test]
fn cached_job_set_decodes_after_the_rules_tighten() {
    let text = std::fs::read_to_string(data("desired.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for job in value["jobs"].as_array_mut().unwrap() {
        let spec = job["spec"].as_object_mut().unwrap();
        spec.insert("FutureKey".into(), serde_json::json!(1));
        spec.insert(
            "Timeout".into(),
            serde_json::json!(u64::from(u32::MAX) * 100),
        );
        spec.insert("Jitter".into(), serde_json::json!(86_400));
        assert!(op_proto::JobSpec::from_task_value(&job["spec"]).is_err());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(desired::FILE), value.to_string()).unwrap();
    let cached: CachedJobs = desired::load(dir.path()).unwrap().unwrap();
    assert_eq!(cached.jobs.len(), 2);
    assert_eq!(cached.jobs[0].spec.timeout_secs, u64::from(u32::MAX) * 100);
    assert_eq!(cached.jobs[1].spec.jitter_secs, 86_400);
}

#[test]
fn config_file_fixture() {
    let text = std::fs::read_to_string(data("agent.toml")).unwrap();
    let file = parse_file(&text).unwrap();
    let c = Config::resolve(&Cli::default(), &file).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7171");
    assert_eq!(c.log_dir, PathBuf::from("/var/log/op-agent"));
    assert_eq!(c.node_name, "db-01");
    assert_eq!(c.ips.len(), 2);
    assert_eq!(c.labels["role"], "db");
    assert_eq!(c.managers.len(), 2);
    assert_eq!(c.manager_token.as_ref().unwrap().0, "agent-token");
    assert!(
        !format!("{c:?}").contains("agent-token"),
        "secrets stay out of Debug"
    );
    assert_eq!(c.shutdown_grace, Duration::from_secs(45));
    assert_eq!(c.output_tail, 32 * 1024);
    assert_eq!(c.log_keep_runs, 20);
    assert_eq!(c.log_keep_bytes, 1 << 20);
    assert_eq!(c.history_keep_runs, 200);
    assert_eq!(c.outbox_bytes, 16 << 20);
    assert_eq!(c.package_keep, 5);
    assert_eq!(
        (c.package_limits.max_bytes, c.package_limits.max_entries),
        (1 << 30, 5000)
    );
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(c.auth.basic.is_some() && c.auth.token.is_some());
}

#[test]
fn jobs_dir_and_manager_are_refused_together() {
    let text = std::fs::read_to_string(data("agent.toml")).unwrap();
    let text = format!("jobs_dir = \"/etc/op-agent/jobs\"\n{text}");
    let file = parse_file(&text).unwrap();
    let err = Config::resolve(&Cli::default(), &file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jobs_dir and manager cannot be combined"),
        "{err}"
    );
}

#[test]
fn stored_run_record_fixture() {
    let text = std::fs::read_to_string(data("run_record.json")).unwrap();
    let r: RunRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(r.trigger, Trigger::Api);
    assert_eq!(r.status, RunStatus::Ok);
    assert_eq!(r.params["port"], "3306");
    assert_eq!(r.rusage.unwrap().max_rss_kb, 9120);
    assert_eq!(r.duration_ms(), Some(78));
    // Written before runs kept their stderr apart: the tail is empty, and an empty tail is left
    // out again, so a record this agent writes reads the same to an older manager.
    assert_eq!(r.stderr_tail, "");
    let again = serde_json::to_value(&r).unwrap();
    assert!(again.get("stderr_tail").is_none(), "{again}");
    let mut failed = r.clone();
    failed.stderr_tail = "boom: no such table\n".into();
    let text = serde_json::to_string(&failed).unwrap();
    assert_eq!(serde_json::from_str::<RunRecord>(&text).unwrap(), failed);
}
