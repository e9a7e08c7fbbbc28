//! Each manager scenario, small: it completes and prints its figures.

use crate::{assert_has, figures, op_bench};

#[test]
fn propagation_with_200_simulated_agents() {
    let out = op_bench(&["--json", "propagation", "--agents", "200", "--saves", "2"])
        .output()
        .unwrap();
    let f = figures(&out);
    assert_has(
        &f,
        &[
            "propagation_p50",
            "propagation_p99",
            "propagation_max",
            "manager_rss_parked",
            "manager_cpu_saves",
            "sim_rss",
        ],
    );
    // Every save reached every agent: 2 saves x 200 agents.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("400 samples"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn ingest_saturating_and_paced() {
    let f = figures(
        &op_bench(&["--json", "ingest", "--agents", "4", "--duration", "2s"])
            .output()
            .unwrap(),
    );
    assert_has(
        &f,
        &["ingest_records_per_s", "ingest_ack_p99", "ingest_records"],
    );
    let records = f.iter().find(|(n, _)| n == "ingest_records").unwrap().1;
    assert!(records > 0.0, "no record was accepted");

    let f = figures(
        &op_bench(&[
            "--json",
            "ingest",
            "--agents",
            "10",
            "--rate",
            "500",
            "--duration",
            "2s",
        ])
        .output()
        .unwrap(),
    );
    assert_has(&f, &["ingest_records_per_s", "ingest_delay_p99"]);
}

#[test]
fn fanout_to_simulated_agents() {
    let out = op_bench(&["--json", "fanout", "--agents", "20", "--count", "2"])
        .output()
        .unwrap();
    let f = figures(&out);
    assert_has(
        &f,
        &[
            "fanout_all_results_p50",
            "fanout_all_results_p99",
            "fanout_first_result_p50",
            "fanout_manager_cpu_per_invocation",
        ],
    );
    // The old name still works.
    let out = op_bench(&["fanout-sim", "--agents", "2", "--count", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn idle_fleet() {
    let f = figures(
        &op_bench(&["--json", "idle", "--agents", "50", "--duration", "2s"])
            .output()
            .unwrap(),
    );
    assert_has(
        &f,
        &["manager_idle_cpu_share", "manager_idle_rss_avg", "sim_rss"],
    );
}

#[test]
fn text_output_is_one_line_per_figure() {
    let out = op_bench(&["idle", "--agents", "5", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        // name value unit  conditions
        let mut words = line.split_whitespace();
        let (name, value) = (words.next().unwrap(), words.next().unwrap());
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{line}"
        );
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(line.contains("  "), "{line}");
    }
}

#[test]
fn follow_with_simulated_nodes() {
    let out = op_bench(&["--json", "follow", "--agents", "5", "--duration", "2s"])
        .output()
        .unwrap();
    let f = figures(&out);
    assert_has(
        &f,
        &[
            "follow_raft_writes_per_s",
            "follow_raft_writes_idle_per_s",
            "follow_polls_per_s",
            "follow_poll_errors",
        ],
    );
    let polls = f.iter().find(|(n, _)| n == "follow_polls_per_s").unwrap().1;
    assert!(polls > 0.0, "no reader got an answer");
}
