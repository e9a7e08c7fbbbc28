//! Any bytes as a task file: parsing never panics, and an accepted job survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use op_proto::JobSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = JobSpec::from_task_json(text) {
        let back = JobSpec::from_task_value(&spec.to_task_value()).expect("serialized job parses");
        assert_eq!(spec, back);
        let _ = spec.schedule().map(|s| s.next_after(chrono::Utc::now()));
    }
});
