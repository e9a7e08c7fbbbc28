//! Commands that need no manager: `validate`, `cron`, `completion`, help and version.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn agentcli() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("agentcli"));
    cmd.env("TZ", "UTC");
    cmd
}

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../op-proto/tests/data")
        .join(path)
}

#[test]
fn validate_accepts_the_seed_samples() {
    let out = agentcli()
        .arg("validate")
        .args(
            ["ll", "python_test", "cycleTest", "apiTest", "task-sample"]
                .map(|f| fixture(&format!("seed/{f}.json"))),
        )
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("ll.json: OK  ls-l  (once-job, timeout 10s, sync)"),
        "{text}"
    );
    assert!(
        text.contains("apiTest.json: OK  apiTest.py  (API job, no timeout, async)"),
        "{text}"
    );
    assert!(
        text.contains("cycleTest.json: OK  cycleTest.py  (cron \"*/5 * * * * * *\""),
        "{text}"
    );
    // Three next fires, five seconds apart.
    let next_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("next:"))
        .unwrap();
    assert_eq!(next_line.matches(", ").count(), 2, "{next_line}");
}

#[test]
fn validate_refuses_each_bad_file_with_its_error() {
    let table = [
        ("missing-jobname.json", "JobName: is required"),
        ("bad-name.json", "JobName: contains ' '"),
        (
            "unknown-key.json",
            "Timout: unknown key; did you mean \"Timeout\"?",
        ),
        (
            "cron-4-fields.json",
            "cron expression has 4 fields; expected 5, 6 or 7",
        ),
        ("cron-8-fields.json", "cron expression has 8 fields"),
        ("cron-61-seconds.json", "second field \"61\" is invalid"),
        ("cron-never.json", "never fires again"),
        ("negative-timeout.json", "Timeout: -1 is out of range"),
        (
            "bad-timezone.json",
            "\"Mars/Olympus\" is not a known IANA time zone",
        ),
        ("bad-cidr.json", "is not a valid CIDR"),
        ("not-json.json", "not valid JSON"),
    ];
    for (file, want) in table {
        agentcli()
            .arg("validate")
            .arg(fixture(&format!("bad/{file}")))
            .assert()
            .code(1)
            .stdout(predicate::str::contains("INVALID").and(predicate::str::contains(want)));
    }
}

#[test]
fn validate_mixed_files_exit_one_and_json_lists_all() {
    let out = agentcli()
        .args(["validate", "-o", "json"])
        .arg(fixture("seed/ll.json"))
        .arg(fixture("bad/unknown-key.json"))
        .assert()
        .code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["job"]["JobName"], "ls-l");
    assert_eq!(v[1]["ok"], false);
    assert!(v[1]["errors"][0].as_str().unwrap().starts_with("Timout"));
}

#[test]
fn validate_unreadable_file_is_an_error() {
    agentcli()
        .args(["validate", "/nonexistent/task.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with("agentcli: error:"));
}

#[test]
fn cron_prints_next_fires_in_a_zone() {
    agentcli()
        .args([
            "cron",
            "0 30 2 * * * *",
            "--count",
            "3",
            "--tz",
            "America/New_York",
            "--after",
            "2026-03-07T00:00:00Z",
        ])
        .assert()
        .success()
        .stdout("2026-03-07 02:30:00 EST\n2026-03-08 03:00:00 EDT\n2026-03-09 02:30:00 EDT\n");
}

#[test]
fn cron_seed_form_and_seed_output_flag() {
    let out = agentcli()
        .args([
            "cron",
            "*/10 * * * * * *",
            "-n",
            "2",
            "--after",
            "2026-11-25T08:29:43Z",
            "--o",
            "json",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["next"][0], "2026-11-25T08:29:50Z");
    assert_eq!(v["next"][1], "2026-11-25T08:30:00Z");
}

#[test]
fn cron_errors() {
    agentcli()
        .args(["cron", "* * * *"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("4 fields"));
    agentcli()
        .args(["cron", "0 0 0 1 1 * 2020"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("never fires"));
    agentcli()
        .args(["cron", "@daily", "--tz", "Nowhere/City"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown time zone"));
}

#[test]
fn help_has_examples_and_completion_works() {
    agentcli()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
    agentcli()
        .args(["validate", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
    agentcli()
        .args(["cron", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
    agentcli()
        .args(["completion", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("agentcli"));
    agentcli().arg("--version").assert().success();
    agentcli().arg("no-such-command").assert().code(2);
}

#[test]
fn broken_pipe_is_not_an_error() {
    // Close stdout before the command writes to it: like `agentcli cron ... | head -0`.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' cron '* * * * * * *' -n 100000 | head -c 0",
            assert_cmd::cargo::cargo_bin!("agentcli").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs agentcli with a stdout whose reader is already gone: every write fails with EPIPE, as in
/// `agentcli ... | head -1` once head has exited.
pub fn with_closed_stdout(cmd: &mut std::process::Command) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn completion_into_a_closed_pipe_ends_quietly() {
    let out = with_closed_stdout(
        std::process::Command::new(assert_cmd::cargo::cargo_bin!("agentcli"))
            .args(["completion", "bash"]),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 17 item 17: what the seed's own help printed works: `–o wide` (en dash), `-v`, and the
/// name `agentCli` (the symlink the package installs).
#[test]
fn seed_spellings_en_dash_dash_v_and_the_agentcli_name() {
    let out = agentcli()
        .args(["cron", "@daily", "-n", "1", "\u{2013}o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    agentcli()
        .arg("-v")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("agentcli "));

    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("agentCli");
    std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin!("agentcli"), &link).unwrap();
    Command::new(&link)
        .arg("-v")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("agentcli "));
    // Usage and errors name the one program, whatever it was called by.
    Command::new(&link)
        .arg("nope")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: agentcli"));
}

/// Issue 17 item 19: a token from the environment is not shown as a required flag, and a
/// command's help lists its own flags apart from the global ones.
#[test]
fn usage_and_help_keep_global_flags_apart() {
    agentcli()
        .env("OP_TOKEN", "secret-ish")
        .env("OP_MANAGER", "http://127.0.0.1:9")
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: agentcli run <JOB>\n"))
        .stderr(predicate::str::contains("--token").not());
    let out = agentcli().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let global = help.find("Global options:").expect(&help);
    let own = help.find("--param").unwrap();
    let token = help.find("--token <TOKEN>").unwrap();
    assert!(own < global && global < token, "{help}");
}

/// The task file of docs/rollouts.md (a `Rollout` field) is valid; `validate` called the field an
/// unknown key (and `save` did too when the Rollout itself was wrong) instead of checking it.
#[test]
fn validate_checks_a_task_files_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("backup.json");
    std::fs::write(
        &good,
        r#"{"JobName": "backup", "Command": "/opt/backup.sh", "CronExpr": "0 0 2 * * * *",
 "Rollout": {"Stages": ["1", "10%", "100%"], "StepWait": "5m", "HaltOn": "1", "AutoRollback": true}}"#,
    )
    .unwrap();
    agentcli()
        .arg("validate")
        .arg(&good)
        .assert()
        .success()
        .stdout(predicate::str::contains("backup.json: OK  backup"));
    for (rollout, want) in [
        (r#"{"Stages": ["1"], "Bogus": 1}"#, "Bogus"),
        (
            r#"{"Stages": ["10%", "5"]}"#,
            "Rollout: host counts come before percentages",
        ),
    ] {
        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            format!(r#"{{"JobName": "backup", "Command": "true", "Rollout": {rollout}}}"#),
        )
        .unwrap();
        agentcli()
            .arg("validate")
            .arg(&bad)
            .assert()
            .code(1)
            .stdout(
                predicate::str::contains(want).and(predicate::str::contains("unknown key").not()),
            );
    }
}
