//! Wire-format fixtures of the agent protocol (`tests/data/wire/`): each file decodes into its
//! op-proto type and encodes back to the same JSON, so the manager and agents built at different
//! times keep understanding each other.

use std::path::PathBuf;

use op_proto::ErrorBody;
use op_proto::agent::{
    DesiredState, Heartbeat, RegisterRequest, RegisterResponse, RunBatch, RunBatchAck,
};
use op_proto::api::SaveJobResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize>(file: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wire")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&value).unwrap(),
        want,
        "{file} does not round-trip"
    );
    value
}

#[test]
fn agent_protocol_fixtures_round_trip() {
    let state: DesiredState = round_trip("desired_state.json");
    assert_eq!(state.jobs.len(), 2);
    assert_eq!(state.jobs[0].spec.name, "cycleTest.py");
    round_trip::<RegisterRequest>("register_request.json");
    round_trip::<RegisterResponse>("register_response.json");
    round_trip::<Heartbeat>("heartbeat.json");
    let batch: RunBatch = round_trip("run_batch.json");
    assert_eq!(batch.runs[0].node_id, batch.node_id);
    round_trip::<RunBatchAck>("run_batch_ack.json");
    // Identity reset and refused records (issue 16); the forms above, without them, still read.
    let reset: RegisterRequest = round_trip("register_request_reset.json");
    assert!(reset.reset.unwrap().previous_node_id.is_some());
    let history: RegisterResponse = round_trip("register_response_history.json");
    assert_eq!((history.once_history.len(), history.replaced.len()), (2, 1));
    let ack: RunBatchAck = round_trip("run_batch_ack_refused.json");
    assert_eq!(ack.refused.len(), 1);
    round_trip::<SaveJobResponse>("save_job_response.json");
    let err: ErrorBody = round_trip("error_body.json");
    assert_eq!(err.code, "invalid_job");
}

/// The raft log entries in `raft.db`, the vote and the snapshot meta are persisted JSON too
/// (`tests/data/raft/`). `OP_WRITE_FIXTURES=1` rewrites them after an intended change.
#[test]
fn raft_persisted_formats_round_trip() {
    use std::collections::{BTreeMap, BTreeSet};

    use op_manager::raft::types::{Entry, LogId, Member, SnapshotMeta, StoredMembership, Vote};
    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
    let member = Member {
        api_addr: "http://10.0.0.1:8090".into(),
        raft_addr: "http://10.0.0.1:8091".into(),
    };
    let membership = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, member)]));
    let command: op_store::Command = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../op-store/tests/data/commands/delete_job.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let samples: Vec<(&str, serde_json::Value)> = vec![
        (
            "entry_blank.json",
            serde_json::to_value(Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            })
            .unwrap(),
        ),
        (
            "entry_membership.json",
            serde_json::to_value(Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Membership(membership.clone()),
            })
            .unwrap(),
        ),
        (
            "entry_command.json",
            serde_json::to_value(Entry {
                log_id: log_id(1, 3),
                payload: EntryPayload::Normal(command),
            })
            .unwrap(),
        ),
        (
            "vote.json",
            serde_json::to_value(Vote::new_committed(1, 1)).unwrap(),
        ),
        (
            "snapshot_meta.json",
            serde_json::to_value(SnapshotMeta {
                last_log_id: Some(log_id(1, 3)),
                last_membership: StoredMembership::new(Some(log_id(1, 2)), membership),
                snapshot_id: "1-3-0a1b2c".into(),
            })
            .unwrap(),
        ),
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/raft");
    for (file, value) in samples {
        let path = dir.join(file);
        if std::env::var_os("OP_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(stored, value, "{file}: the persisted form changed");
        // And it decodes into the type that reads it from disk.
        match file {
            "vote.json" => drop(serde_json::from_str::<Vote>(&text).unwrap()),
            "snapshot_meta.json" => drop(serde_json::from_str::<SnapshotMeta>(&text).unwrap()),
            _ => drop(serde_json::from_str::<Entry>(&text).unwrap()),
        }
    }
}
