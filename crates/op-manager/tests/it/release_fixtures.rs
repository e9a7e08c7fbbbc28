//! What a released manager wrote must stay readable by every later one (DESIGN 13.7).
//!
//! `tests/data/release-0.1.0/` was written once by release 0.1.0 and is never rewritten:
//! - `raft-log.jsonl`: a raft log, one entry per line exactly as `raft.db` stores it (a blank
//!   entry, a membership change, then one entry per `Command` variant, taken from op-store's
//!   command fixtures of that release);
//! - `snapshot.db` + `snapshot.meta.json`: the snapshot that release builds after applying that
//!   log (the state database by `VACUUM INTO`, and the meta openraft keeps beside it).
//!
//! The tests read them with this build: every entry decodes and applies, the snapshot opens (its
//! schema migrated) and reads back. A second test makes the jobs inside them break today's
//! validation rules, as a stricter rule added later would, and shows that stored data still
//! decodes: validation belongs to the API, not to decoding.
//!
//! To add the fixtures of a new release, run
//! `OP_WRITE_RELEASE_FIXTURES=1 cargo nextest run -p op-manager -E 'test(release_fixtures)'`:
//! it writes the directory of the current version only when it does not exist yet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use op_manager::raft::types::{Entry, LogId, Member, SnapshotMeta, StoredMembership};
use op_store::{Command, META_LAST_APPLIED, META_MEMBERSHIP, Store};
use openraft::{CommittedLeaderId, EntryPayload, Membership};

/// The release whose fixtures are read. Add a line per release; never remove one.
const RELEASES: &[&str] = &["0.1.0"];

/// The order the command fixtures are applied in: the state they build up is the snapshot.
const COMMAND_ORDER: &[&str] = &[
    "init_cluster",
    "register_node",
    "heartbeats",
    "prune",
    "save_job",
    "save_job",
    "create_token",
    "add_package_version",
    "create_invocation",
    "ingest_runs",
    "ingest_run_batches",
    "request_output",
    "set_node_status",
    "advance_invocation",
    "cancel_invocation",
    "rollback_package",
    "delete_package_version",
    "set_job_enabled",
    "delete_job",
    "revoke_token",
    "forget_node",
];

fn release_dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("release-{version}"))
}

/// Writes the fixtures of the current version (see the module doc), once.
fn write_current_release() {
    let dir = release_dir(env!("CARGO_PKG_VERSION"));
    if std::env::var_os("OP_WRITE_RELEASE_FIXTURES").is_none() || dir.exists() {
        return;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let commands =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../op-store/tests/data/commands");
    let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    let member = Member {
        api_addr: "http://10.0.0.1:8090".into(),
        raft_addr: "http://10.0.0.1:8091".into(),
    };
    let membership = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, member)]));
    let mut entries = vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Membership(membership),
        },
    ];
    let mut saved = 0;
    for (i, kind) in COMMAND_ORDER.iter().enumerate() {
        let text = std::fs::read_to_string(commands.join(format!("{kind}.json"))).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if *kind == "save_job" {
            saved += 1;
            if saved == 2 {
                // The job the invocation fixture runs, so the snapshot holds an invocation.
                value["spec"] = serde_json::json!({
                    "JobName": "apiTest.py", "Command": "python apiTest.py --host '{host}'",
                    "Params": ["host"], "Timeout": 30
                });
            }
        }
        if *kind == "create_invocation" {
            value["invocation"]["revision"] = 1.into();
        }
        let command: Command = serde_json::from_value(value).unwrap();
        entries.push(Entry {
            log_id: log_id(3 + i as u64),
            payload: EntryPayload::Normal(command),
        });
    }
    let lines: String = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join("raft-log.jsonl"), lines).unwrap();

    // The snapshot, built as the state machine builds it.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("state.db")).unwrap();
    apply_all(&store, &entries);
    let db = dir.join("snapshot.db");
    store.snapshot_to(&db).unwrap();
    let (last_log_id, last_membership) = snapshot_meta_of(&db);
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id: format!("1-{}-release", entries.len()),
    };
    std::fs::write(
        dir.join("snapshot.meta.json"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
}

/// Applies entries the way `raft::state_machine` does: one batch, with the raft metadata.
fn apply_all(store: &Store, entries: &[Entry]) -> usize {
    let mut membership = None;
    let batch: Vec<op_store::Entry<'_>> = entries
        .iter()
        .map(|e| op_store::Entry {
            index: e.log_id.index,
            command: match &e.payload {
                EntryPayload::Normal(c) => Some(c),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(e.log_id), m.clone()));
                    None
                }
                EntryPayload::Blank => None,
            },
        })
        .collect();
    let last = serde_json::to_string(&entries.last().map(|e| e.log_id)).unwrap();
    let membership = membership.map(|m| serde_json::to_string(&m).unwrap());
    let (results, _) = store
        .apply_batch(&batch, &last, membership.as_deref())
        .unwrap();
    results.len()
}

fn snapshot_meta_of(db: &Path) -> (Option<LogId>, StoredMembership) {
    let last = Store::meta_of_file(db, META_LAST_APPLIED)
        .unwrap()
        .expect("a snapshot records its last applied entry");
    let membership = Store::meta_of_file(db, META_MEMBERSHIP)
        .unwrap()
        .expect("a snapshot records its membership");
    (
        serde_json::from_str(&last).unwrap(),
        serde_json::from_str(&membership).unwrap(),
    )
}

fn read_log(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("raft log line {}: {e}", i + 1))
        })
        .collect()
}

/// What the fixtures must read back as, whichever build reads them.
fn check_log(release: &str, entries: &[Entry]) {
    assert_eq!(entries.len(), 2 + COMMAND_ORDER.len(), "{release}");
    let kinds: Vec<&str> = entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(c) => Some(c.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, COMMAND_ORDER, "{release}: one entry per command");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("state.db")).unwrap();
    assert_eq!(apply_all(&store, entries), entries.len(), "{release}");
    assert_eq!(store.jobs().unwrap().len(), 2, "{release}");
}

fn check_snapshot(release: &str, db: &Path, meta: &str) {
    let meta: SnapshotMeta = serde_json::from_str(meta).unwrap();
    let (last, membership) = snapshot_meta_of(db);
    assert_eq!(meta.last_log_id, last, "{release}");
    assert_eq!(meta.last_membership, membership, "{release}");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("state.db");
    std::fs::copy(db, &copy).unwrap();
    let store = Store::open(&copy).unwrap();
    let jobs = store.jobs().unwrap();
    assert_eq!(
        jobs.iter()
            .map(|j| (j.spec.name.as_str(), j.revision))
            .collect::<Vec<_>>(),
        [("apiTest.py", 1), ("cycleTest.py", 1)],
        "{release}"
    );
    assert!(!store.nodes().unwrap().is_empty(), "{release}");
    let runs = store.runs(&op_proto::api::RunQuery::default()).unwrap();
    assert!(!runs.is_empty(), "{release}: the ingested runs");
    let invocations = store
        .invocations(&op_proto::invoke::InvocationQuery::default())
        .unwrap();
    assert_eq!(invocations.len(), 1, "{release}");
    let (row, targets) = store
        .invocation(invocations[0].0.id, true)
        .unwrap()
        .unwrap();
    assert_eq!(row.detail.spec.name, "apiTest.py", "{release}");
    assert_eq!(targets.len(), 2, "{release}");
    assert!(!store.packages().unwrap().is_empty(), "{release}");
}

#[test]
fn release_fixtures_decode_apply_and_open() {
    write_current_release();
    for release in RELEASES {
        let dir = release_dir(release);
        let log = std::fs::read_to_string(dir.join("raft-log.jsonl"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        check_log(release, &read_log(&log));
        let meta = std::fs::read_to_string(dir.join("snapshot.meta.json")).unwrap();
        check_snapshot(release, &dir.join("snapshot.db"), &meta);
    }
}

/// Makes every job in `value` break today's validation rules the way a stricter rule added by a
/// later release would break it: a key this build does not know, values past today's limits.
/// Returns how many jobs it changed.
fn break_todays_rules(value: &mut serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) if map.contains_key("JobName") => {
            map.insert("FutureKey".into(), serde_json::json!({"added": "later"}));
            map.insert(
                "Timeout".into(),
                serde_json::json!(op_proto::job::MAX_TIMEOUT_SECS + 1),
            );
            map.insert("Retries".into(), serde_json::json!(99));
            map.insert("TimeZone".into(), serde_json::json!("Mars/Olympus"));
            map.insert("Concurrency".into(), serde_json::json!("queue"));
            1
        }
        serde_json::Value::Object(map) => map.values_mut().map(break_todays_rules).sum(),
        serde_json::Value::Array(items) => items.iter_mut().map(break_todays_rules).sum(),
        _ => 0,
    }
}

/// The rules tighten after a release: its stored jobs now break them, and must still decode, as
/// raft entries (a member catching up on the log) and from a snapshot (a member installing it).
#[test]
fn release_fixtures_decode_after_the_rules_tighten() {
    for release in RELEASES {
        let dir = release_dir(release);
        let log = std::fs::read_to_string(dir.join("raft-log.jsonl")).unwrap();
        let mut broken = 0;
        let lines: Vec<String> = log
            .lines()
            .map(|line| {
                let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
                broken += break_todays_rules(&mut value);
                value.to_string()
            })
            .collect();
        assert_eq!(
            broken, 3,
            "{release}: the jobs of two saves and an invocation"
        );
        // Today's validation refuses such a job, as the API would.
        let mut job = serde_json::json!({"JobName": "a", "Command": "true"});
        break_todays_rules(&mut job);
        assert!(op_proto::JobSpec::from_task_value(&job).is_err());
        // The log still decodes and applies.
        check_log(release, &read_log(&lines.join("\n")));

        // The snapshot's stored jobs, rewritten the same way, still read back.
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("snapshot.db");
        std::fs::copy(dir.join("snapshot.db"), &db).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        for (table, key, column) in [("jobs", "name", "spec"), ("invocations", "id", "record")] {
            let rows: Vec<(String, String)> = conn
                .prepare(&format!("SELECT {key}, {column} FROM {table}"))
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for (id, text) in rows {
                let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(break_todays_rules(&mut value), 1, "{table} {id}");
                conn.execute(
                    &format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"),
                    [value.to_string(), id],
                )
                .unwrap();
            }
        }
        drop(conn);
        let meta = std::fs::read_to_string(dir.join("snapshot.meta.json")).unwrap();
        check_snapshot(release, &db, &meta);
    }
}
