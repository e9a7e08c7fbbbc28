//! A single manager that is busy is not a manager without a leader. Here its raft log is slow
//! for real: another process holds raft.db's write lock (as a slow or stalled disk would stall
//! the append), for longer than one leadership check but less than SQLite's busy timeout. Reads
//! during the stall answer 503 `overloaded` after one check (10 s), not `no_leader` after a
//! 20 s leader search; once the disk answers again the write made during the stall is there.

use std::time::{Duration, Instant};

use op_testkit::Manager;

/// Longer than two leadership checks (so the old leader search would have run out), shorter
/// than the log store's 30 s busy timeout (past that raft would stop on a storage error).
const STALL: Duration = Duration::from_secs(23);

fn job(name: &str) -> String {
    format!(r#"{{"JobName":"{name}","Command":"true","CronExpr":"0 0 1 1 *"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_stalled_log_says_overloaded_not_no_leader() {
    let m = Manager::start();
    let c = m.client().with_timeout(Duration::from_secs(60));
    c.save_job_text("before", &job("before")).await.unwrap();

    // Take raft.db's write lock from this process and keep it for STALL.
    let raft_db = m.data_dir().join("raft.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&raft_db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(Instant::now()).unwrap();
        std::thread::sleep(STALL);
        conn.execute_batch("ROLLBACK").unwrap();
    });
    let locked_at = locked_rx.recv().unwrap();

    // A write's append now waits on the lock, and with it the raft core.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move { c.save_job_text("during", &job("during")).await })
    };
    // Ask until a read meets the stalled core (one asked before the writer's append reached the
    // lock is answered at once); every answer must come while the lock is still held.
    let (e, took) = loop {
        let asked = Instant::now();
        match c.list_jobs().await {
            Err(e) => break (e, asked.elapsed()),
            Ok(_) => assert!(
                locked_at.elapsed() < STALL,
                "no read met the stalled log while it was stalled"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (e.status(), e.code()),
        (Some(503), Some("overloaded")),
        "{e}"
    );
    assert!(
        e.to_string().contains("manager overloaded"),
        "the error says what happened: {e}"
    );
    assert!(
        !e.to_string().contains("no raft leader"),
        "a busy leader is not a missing one: {e}"
    );
    assert!(
        locked_at.elapsed() < STALL,
        "the answer came while the log was still stalled ({took:?})"
    );

    holder.join().unwrap();
    // The stall over, the write made during it commits and reads answer again.
    writer.await.unwrap().unwrap();
    let names: Vec<String> = c
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.record.spec.name)
        .collect();
    assert!(
        names.contains(&"before".to_string()) && names.contains(&"during".to_string()),
        "{names:?}"
    );
}
