//! The seed's task files load unchanged; each bad file is refused with its own error.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use op_proto::JobSpec;
use op_proto::job::TaskFileError;

fn data(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap()
}

#[test]
fn seed_ll_json() {
    let spec = JobSpec::from_task_json_at(&data("seed/ll.json"), now()).unwrap();
    let mut want = JobSpec::new("ls-l", "ls -l /tmp");
    want.once_job = true;
    want.timeout_secs = 10;
    want.syn_flag = true;
    assert_eq!(spec, want);
    assert_eq!(spec.kind(), "once");
}

#[test]
fn seed_python_test_json() {
    let spec = JobSpec::from_task_json_at(&data("seed/python_test.json"), now()).unwrap();
    assert_eq!(spec.name, "test.py");
    assert_eq!(
        spec.command,
        "python /data/op-agent/src/python_project_dir/test.py"
    );
    assert!(spec.once_job && spec.syn_flag && spec.enabled);
}

#[test]
fn seed_cycle_test_json_with_comment_keys() {
    let spec = JobSpec::from_task_json_at(&data("seed/cycleTest.json"), now()).unwrap();
    assert_eq!(spec.name, "cycleTest.py");
    assert_eq!(spec.cron_expr, "*/5 * * * * * *");
    assert!(!spec.once_job && !spec.syn_flag);
    let fires = spec.schedule().unwrap().upcoming(now(), 3);
    assert_eq!(
        fires,
        vec![
            Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 5).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 10).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 15).unwrap(),
        ]
    );
}

#[test]
fn seed_api_test_json() {
    let spec = JobSpec::from_task_json_at(&data("seed/apiTest.json"), now()).unwrap();
    assert_eq!(spec.name, "apiTest.py");
    assert!(spec.is_api_only());
    assert_eq!(spec.timeout_secs, 0);
    assert_eq!(
        op_proto::params::placeholders(&spec.command, &spec.params),
        ["host", "port"]
    );
}

#[test]
fn seed_task_sample_json() {
    let spec = JobSpec::from_task_json_at(&data("seed/task-sample.json"), now()).unwrap();
    assert_eq!(spec.cgroup.cpu_shares, 128);
    assert_eq!(spec.white_hosts.len(), 2);
    assert_eq!(spec.black_hosts[0].as_str(), "192.168.1.3");
}

#[test]
fn every_seed_file_round_trips() {
    for f in ["ll", "python_test", "cycleTest", "apiTest", "task-sample"] {
        let spec = JobSpec::from_task_json(&data(&format!("seed/{f}.json"))).unwrap();
        let text = serde_json::to_string_pretty(&spec).unwrap();
        let back: JobSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(spec, back, "{f}");
    }
}

fn refused(file: &str) -> Vec<String> {
    match JobSpec::from_task_json_at(&data(&format!("bad/{file}")), now()) {
        Ok(spec) => panic!("{file} was accepted: {spec:?}"),
        Err(e) => e.messages(),
    }
}

#[test]
fn bad_files_each_get_their_error() {
    let table: &[(&str, &str)] = &[
        ("missing-jobname.json", "JobName: is required"),
        (
            "bad-name.json",
            "JobName: contains ' '; only letters, digits, '.', '_' and '-' are allowed",
        ),
        (
            "unknown-key.json",
            "Timout: unknown key; did you mean \"Timeout\"?",
        ),
        (
            "cron-4-fields.json",
            "CronExpr: cron expression has 4 fields; expected 5, 6 or 7",
        ),
        (
            "cron-8-fields.json",
            "CronExpr: cron expression has 8 fields; expected 5, 6 or 7",
        ),
        (
            "cron-61-seconds.json",
            "CronExpr: cron expression \"61 * * * * * *\": second field \"61\" is invalid",
        ),
        (
            "cron-never.json",
            "CronExpr: cron expression \"0 0 0 30 2 * *\" never fires again",
        ),
        (
            "negative-timeout.json",
            "Timeout: -1 is out of range; allowed is 0..=31536000 seconds",
        ),
        (
            "bad-timezone.json",
            "TimeZone: \"Mars/Olympus\" is not a known IANA time zone",
        ),
        (
            "bad-cidr.json",
            "WhiteHosts: host entry \"10.0.0.0/33\": is not a valid CIDR: the prefix must be 0..=32",
        ),
    ];
    for (file, want) in table {
        let errors = refused(file);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{file}: want an error starting with {want:?}, got {errors:?}"
        );
    }
}

#[test]
fn non_json_file() {
    let err = JobSpec::from_task_json(&data("bad/not-json.json")).unwrap_err();
    assert!(matches!(err, TaskFileError::NotJson(_)), "{err:?}");
    assert!(err.to_string().starts_with("not valid JSON"));
}

#[test]
fn wire_fixture_job_record() {
    // The stored/wire form of a job record; changing it breaks agents and stored state.
    let text = data("wire/job_record.json");
    let record: op_proto::api::JobRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(record.revision, 3);
    assert_eq!(record.spec.name, "cycleTest.py");
    let again: serde_json::Value = serde_json::to_value(&record).unwrap();
    let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, orig);
}

#[test]
fn wire_fixture_desired_state_with_directives() {
    // What a manager hands an agent on its sync call: a run directive and a kill directive.
    let text = data("wire/desired_state_directives.json");
    let state: op_proto::agent::DesiredState = serde_json::from_str(&text).unwrap();
    assert_eq!(state.directives.len(), 2);
    let op_proto::agent::Directive::Run(run) = &state.directives[0] else {
        panic!("the first directive is a run")
    };
    assert_eq!(run.spec.params, ["host"]);
    assert_eq!(run.params["host"], "10.0.0.7");
    assert_eq!(run.trigger, op_proto::Trigger::Adhoc);
    assert!(matches!(
        state.directives[1],
        op_proto::agent::Directive::Kill { .. }
    ));
    assert!(state.received_at.is_some());
    let again = serde_json::to_value(&state).unwrap();
    let back: op_proto::agent::DesiredState = serde_json::from_value(again).unwrap();
    assert_eq!(back, state);
}

#[test]
fn wire_fixture_light_answer_with_an_output_request() {
    // A sync answer carrying only an output request (to an agent that passed `partial=1`); the
    // full answers above, without the flag, still read as full answers.
    let text = data("wire/desired_state_light.json");
    let state: op_proto::agent::DesiredState = serde_json::from_str(&text).unwrap();
    assert!(state.directives_only);
    assert!(matches!(
        state.directives[..],
        [op_proto::agent::Directive::UploadOutput { offset: 65536, .. }]
    ));
    let again: serde_json::Value = serde_json::to_value(&state).unwrap();
    let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, orig);
    let full: op_proto::agent::DesiredState =
        serde_json::from_str(&data("wire/desired_state_directives.json")).unwrap();
    assert!(!full.directives_only);
    assert!(
        !serde_json::to_string(&full)
            .unwrap()
            .contains("directives_only"),
        "a full answer is written as before"
    );
}

#[test]
fn wire_fixture_invoke_request() {
    let text = data("wire/invoke_request.json");
    let req: op_proto::invoke::InvokeRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(req.batch, Some(op_proto::invoke::BatchSize::Percent(25)));
    assert_eq!(req.hosts.len(), 2);
    let again: serde_json::Value = serde_json::to_value(&req).unwrap();
    let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, orig);
}

#[test]
fn wire_fixture_invocation_event_stream() {
    // The NDJSON answer of a waiting invocation: one event per line, each line round-trips.
    let text = data("wire/invocation_events.ndjson");
    let events: Vec<op_proto::invoke::InvocationEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(events.len(), 6);
    let op_proto::invoke::InvocationEvent::Summary(s) = events.last().unwrap() else {
        panic!("the last line is the summary")
    };
    assert_eq!((s.total, s.ok, s.failed, s.unreachable), (3, 1, 1, 1));
    for (line, event) in text.lines().zip(&events) {
        let again = serde_json::to_value(event).unwrap();
        let orig: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(again, orig, "{line}");
    }
}

#[test]
fn wire_fixture_heartbeat_with_facts() {
    // A heartbeat carrying the host's facts (sent when their hash differs from the manager's).
    let text = data("wire/heartbeat_facts.json");
    let beat: op_proto::agent::Heartbeat = serde_json::from_str(&text).unwrap();
    let facts = beat.facts.as_ref().unwrap();
    assert_eq!((facts.os.as_str(), facts.cpus), ("ubuntu", Some(8)));
    assert_eq!(
        facts.get("disk_gb"),
        Some(op_proto::facts::FactValue::Number(100))
    );
    let again: serde_json::Value = serde_json::to_value(&beat).unwrap();
    let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, orig);
    // The hash is a function of the facts alone: pinned, so an agent and a manager of different
    // builds agree on it (a change here makes every agent resend its facts once).
    assert_eq!(facts.hash(), "bddb21d5ac596377");
    // A sync answer without facts_hash (an older manager) reads as before, and one with it
    // round-trips.
    let full: op_proto::agent::DesiredState =
        serde_json::from_str(&data("wire/desired_state_directives.json")).unwrap();
    assert_eq!(full.facts_hash, None);
    let mut acked = full.clone();
    acked.facts_hash = Some(facts.hash());
    let back: op_proto::agent::DesiredState =
        serde_json::from_value(serde_json::to_value(&acked).unwrap()).unwrap();
    assert_eq!(back, acked);
}
