//! The reads the web console adds: the latest result per host counted by job, pages of runs and
//! of the audit log, and runs and failures counted per slice of time.

use op_proto::RunStatus;
use op_proto::api::RunQuery;

use crate::common::*;

#[test]
fn latest_result_per_host_counted_by_job() {
    let mut s = TestStore::new();
    for n in 1..=3 {
        s.apply(register(n, 0));
    }
    s.apply(save(cron_job("a"), 0));
    s.apply(save(cron_job("b"), 0));
    // node 1: a failed, then ok (latest ok); node 2: a failed; node 3: a skipped last.
    s.apply(ingest(
        1,
        vec![
            run(1, "a", 1, 10, RunStatus::Failed),
            run(1, "a", 1, 20, RunStatus::Ok),
            run(1, "b", 1, 20, RunStatus::Ok),
        ],
        30,
    ));
    s.apply(ingest(2, vec![run(2, "a", 1, 15, RunStatus::Failed)], 30));
    s.apply(ingest(
        3,
        vec![
            run(3, "a", 1, 10, RunStatus::Ok),
            run(3, "a", 1, 25, RunStatus::Skipped),
        ],
        30,
    ));
    let all = s.store.last_results(&[]).unwrap();
    assert_eq!(
        all,
        [
            ("a".to_string(), RunStatus::Failed, 1),
            ("a".to_string(), RunStatus::Ok, 1),
            ("a".to_string(), RunStatus::Skipped, 1),
            ("b".to_string(), RunStatus::Ok, 1),
        ]
    );
    assert_eq!(
        s.store.last_results(&["b".to_string()]).unwrap(),
        [("b".to_string(), RunStatus::Ok, 1)]
    );

    // Pages of the history, newest first.
    let q = RunQuery {
        limit: Some(2),
        ..RunQuery::default()
    };
    let first = s.store.runs_from(&q, 0).unwrap();
    let second = s.store.runs_from(&q, 2).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 2);
    assert!(first[1].started_at >= second[0].started_at);
    assert!(
        first
            .iter()
            .all(|r| second.iter().all(|o| o.run_id != r.run_id))
    );
}

#[test]
fn audit_pages_by_id() {
    let mut s = TestStore::new();
    for i in 0..5 {
        s.apply(save(cron_job(&format!("j{i}")), i));
    }
    let (page, total) = s.store.audit_page(None, 2).unwrap();
    assert_eq!(total, 5);
    assert_eq!(page.len(), 2);
    assert!(page[0].id > page[1].id);
    let (next, _) = s.store.audit_page(Some(page[1].id), 10).unwrap();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|e| e.id < page[1].id));
}

#[test]
fn runs_and_failures_counted_per_slice_of_time() {
    let mut s = TestStore::new();
    for n in 1..=2 {
        s.apply(register(n, 0));
    }
    s.apply(save(cron_job("a"), 0));
    // Slices of 10 s from 100 s: [100,110) [110,120) [120,130). A run at 95 s and one at 130 s
    // fall outside the window.
    s.apply(ingest(
        1,
        vec![
            run(1, "a", 1, 95, RunStatus::Failed),
            run(1, "a", 1, 100, RunStatus::Ok),
            run(1, "a", 1, 105, RunStatus::Failed),
            run(1, "a", 1, 119, RunStatus::Timeout),
            run(1, "a", 1, 130, RunStatus::Failed),
        ],
        200,
    ));
    s.apply(ingest(
        2,
        vec![
            run(2, "a", 1, 109, RunStatus::Skipped),
            run(2, "a", 1, 111, RunStatus::Ok),
        ],
        200,
    ));
    let buckets = s
        .store
        .run_timeline(at(100), chrono::Duration::seconds(10), 3)
        .unwrap();
    let got: Vec<(i64, u64, u64)> = buckets
        .iter()
        .map(|b| ((b.start - at(0)).num_seconds(), b.runs, b.failed))
        .collect();
    assert_eq!(got, [(100, 3, 1), (110, 2, 1), (120, 0, 0)]);
}
