//! Any command and value: substitution never panics, and the rewritten command does not depend on
//! the value at all (a value is never spliced into shell text; it only travels in the environment,
//! unchanged).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, String)| {
    let (command, value) = input;
    let with = |v: &str| {
        let mut values = BTreeMap::new();
        values.insert("p".to_string(), v.to_string());
        op_proto::params::substitute(&command, &[], &values)
    };
    if let Ok(out) = with(&value) {
        assert_eq!(out.env, vec![("OP_PARAM_P".to_string(), value.clone())]);
        let plain = with("plain").expect("a plain value is accepted wherever another one was");
        assert_eq!(
            out.command, plain.command,
            "the value changed the command text"
        );
    }
});
