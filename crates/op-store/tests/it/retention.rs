//! Retention: per (job, node) count, age, the global byte budget, audit, Left nodes.

use op_proto::RunStatus;
use op_proto::api::RunQuery;
use op_store::{Command, CommandResult, RetentionLimits};

use crate::common::*;

fn none() -> RetentionLimits {
    RetentionLimits {
        runs_per_job_node: 0,
        run_max_age_secs: 0,
        run_max_bytes: 0,
        audit_max_age_secs: 0,
        audit_max_entries: 0,
        history_max_age_secs: 0,
        rollouts_kept: 0,
        rollout_max_age_secs: 0,
    }
}

fn prune(s: &mut TestStore, now_secs: i64, limits: RetentionLimits) -> op_store::PruneReport {
    match s.apply(Command::Prune {
        now: at(now_secs),
        limits,
    }) {
        CommandResult::Pruned { report } => report,
        other => panic!("{other:?}"),
    }
}

fn count(s: &TestStore, job: &str, host: &str) -> usize {
    s.store
        .runs(&RunQuery {
            job: Some(job.into()),
            host: Some(host.into()),
            ..RunQuery::default()
        })
        .unwrap()
        .len()
}

#[test]
fn keeps_the_newest_runs_per_job_and_node() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["a", "b"]);
    for n in [2, 3] {
        s.apply(ingest(
            n,
            (0..10).map(|i| run(n, "a", 1, i, RunStatus::Ok)).collect(),
            20,
        ));
        s.apply(ingest(
            n,
            (0..2).map(|i| run(n, "b", 1, i, RunStatus::Ok)).collect(),
            20,
        ));
    }
    let report = prune(
        &mut s,
        30,
        RetentionLimits {
            runs_per_job_node: 3,
            ..none()
        },
    );
    assert_eq!(report.runs_by_count, 14);
    assert_eq!(count(&s, "a", "node-2"), 3);
    assert_eq!(count(&s, "a", "node-3"), 3);
    assert_eq!(count(&s, "b", "node-2"), 2);
    // The newest are the ones kept.
    assert_eq!(starts(&s, "a", "node-2"), [at(9), at(8), at(7)]);
}

#[test]
fn drops_runs_older_than_max_age() {
    let mut s = TestStore::new();
    given(&mut s, &[2], &["a"]);
    s.apply(ingest(
        2,
        vec![
            run(2, "a", 1, 0, RunStatus::Ok),
            run(2, "a", 1, 5000, RunStatus::Ok),
        ],
        6000,
    ));
    let report = prune(
        &mut s,
        6000,
        RetentionLimits {
            run_max_age_secs: 3600,
            ..none()
        },
    );
    assert_eq!(report.runs_by_age, 1);
    assert_eq!(count(&s, "a", "all"), 1);
}

#[test]
fn stays_within_the_byte_budget_oldest_first() {
    let mut s = TestStore::new();
    given(&mut s, &[2], &["a"]);
    let mut runs = Vec::new();
    for i in 0..20 {
        let mut r = run(2, "a", 1, i, RunStatus::Ok);
        r.output = "x".repeat(10_000);
        runs.push(r);
    }
    s.apply(ingest(2, runs, 100));
    let total = s.store.stats().unwrap().run_bytes;
    let budget = total / 2;
    let report = prune(
        &mut s,
        100,
        RetentionLimits {
            run_max_bytes: budget,
            ..none()
        },
    );
    let after = s.store.stats().unwrap().run_bytes;
    assert!(after <= budget, "{after} > {budget}");
    assert!(after > budget - 11_000, "deleted more than needed: {after}");
    assert_eq!(report.runs_by_bytes, 10);
    let oldest_kept = s
        .store
        .runs(&RunQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.started_at.unwrap())
        .min()
        .unwrap();
    assert_eq!(oldest_kept, at(10));
}

#[test]
fn prunes_audit_and_left_nodes() {
    let mut s = TestStore::new();
    for i in 0..5 {
        s.apply(save(cron_job(&format!("j{i}")), i));
    }
    s.apply(register(2, 0));
    s.apply(Command::ForgetNode {
        node_id: node_id(2),
        at: at(1),
        actor: "admin".into(),
    });
    let report = prune(
        &mut s,
        10_000,
        RetentionLimits {
            audit_max_entries: 2,
            history_max_age_secs: 60,
            ..none()
        },
    );
    assert_eq!(report.audit, 5);
    assert_eq!(report.nodes, 1);
    assert_eq!(s.store.audit(None, 100).unwrap().len(), 2);
    assert!(s.store.nodes().unwrap().is_empty());
}

fn starts(s: &TestStore, job: &str, host: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    s.store
        .runs(&RunQuery {
            job: Some(job.into()),
            host: Some(host.into()),
            ..RunQuery::default()
        })
        .unwrap()
        .iter()
        .map(|r| r.started_at.unwrap())
        .collect()
}

fn trimmed(result: CommandResult) -> u64 {
    match result {
        CommandResult::RunBatchesIngested { trimmed, .. } => trimmed,
        other => panic!("{other:?}"),
    }
}

fn batch(node: u8, runs: Vec<op_proto::RunRecord>) -> Command {
    Command::IngestRunBatches {
        at: at(100),
        batches: vec![op_store::NodeRuns {
            node_id: node_id(node),
            runs,
        }],
    }
}

#[test]
fn ingestion_keeps_the_count_once_a_prune_enforced_it() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["a", "b"]);
    let three = RetentionLimits {
        runs_per_job_node: 3,
        ..none()
    };
    // Before any prune recorded a count, ingestion keeps everything.
    let first = s.apply(batch(
        2,
        (0..5).map(|i| run(2, "a", 1, i, RunStatus::Ok)).collect(),
    ));
    assert_eq!(trimmed(first), 0);
    assert_eq!(count(&s, "a", "node-2"), 5);
    assert_eq!(prune(&mut s, 30, three).runs_by_count, 2);
    // Newer runs push the oldest out as they are stored, on their own pair only.
    s.apply(ingest(
        3,
        (0..2).map(|i| run(3, "a", 1, i, RunStatus::Ok)).collect(),
        40,
    ));
    let more = s.apply(batch(
        2,
        (5..9).map(|i| run(2, "a", 1, i, RunStatus::Ok)).collect(),
    ));
    assert_eq!(trimmed(more), 4);
    assert_eq!(starts(&s, "a", "node-2"), [at(8), at(7), at(6)]);
    assert_eq!(count(&s, "a", "node-3"), 2);
    // An older run arriving late is the oldest of its pair: it goes at once.
    let late = s.apply(batch(2, vec![run(2, "a", 1, 1, RunStatus::Ok)]));
    assert_eq!(trimmed(late), 1);
    assert_eq!(starts(&s, "a", "node-2"), [at(8), at(7), at(6)]);
    // The same count again: nothing left to do.
    assert_eq!(prune(&mut s, 50, three).runs_by_count, 0);
}

#[test]
fn a_changed_count_is_enforced_on_every_pair_by_the_next_prune() {
    let mut s = TestStore::new();
    given(&mut s, &[2, 3], &["a", "b"]);
    for n in [2, 3] {
        s.apply(ingest(
            n,
            (0..4).map(|i| run(n, "a", 1, i, RunStatus::Ok)).collect(),
            20,
        ));
    }
    let limits = |n| RetentionLimits {
        runs_per_job_node: n,
        ..none()
    };
    assert_eq!(prune(&mut s, 30, limits(3)).runs_by_count, 2);
    assert_eq!(prune(&mut s, 31, limits(2)).runs_by_count, 2);
    assert_eq!(count(&s, "a", "node-2"), 2);
    assert_eq!(count(&s, "a", "node-3"), 2);
    // No count: ingestion trims nothing any more.
    assert_eq!(prune(&mut s, 32, limits(0)).runs_by_count, 0);
    let kept = s.apply(batch(
        2,
        (4..8).map(|i| run(2, "a", 1, i, RunStatus::Ok)).collect(),
    ));
    assert_eq!(trimmed(kept), 0);
    assert_eq!(count(&s, "a", "node-2"), 6);
}
