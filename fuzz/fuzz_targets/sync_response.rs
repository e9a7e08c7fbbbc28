//! Any bytes as a manager's sync answer: decoding never panics, and an accepted desired state
//! survives a round trip unchanged (what the agent caches is what it was sent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use op_proto::agent::DesiredState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = serde_json::from_slice::<DesiredState>(data) {
        let text = serde_json::to_vec(&state).expect("a decoded state encodes");
        let back: DesiredState = serde_json::from_slice(&text).expect("an encoded state decodes");
        assert_eq!(state, back);
    }
});
