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
    round_trip::<SaveJobResponse>("save_job_response.json");
    let err: ErrorBody = round_trip("error_body.json");
    assert_eq!(err.code, "invalid_job");
}
