//! Runs the real `op-bench` binary (the debug build) against the debug `op-manager` beside it,
//! with small numbers, so the fleet simulator and the scenarios never rot. The tests assert that
//! a scenario completes, prints its figures and leaves nothing running; never a time (timing
//! figures belong to op-bench itself, DESIGN.md section 10). `scripts/test` builds the binaries
//! first.

// Tests start real processes; the executor-only rule (clippy.toml) is for product code.
#![allow(clippy::disallowed_methods)]

mod cleanup;
mod smoke;

use std::process::{Command, Output};

/// `op-bench` with `args`, with every `OP_*` variable of the caller's environment removed.
pub fn op_bench(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_op-bench"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OP_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args);
    cmd
}

/// The figures of a successful `--json` run, by name; panics with stderr otherwise.
pub fn figures(out: &Output) -> Vec<(String, f64)> {
    assert!(
        out.status.success(),
        "op-bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    json.as_array()
        .expect("an array of figures")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["value"].as_f64().expect("numeric value"),
            )
        })
        .collect()
}

/// Asserts that `names` are all among `figures`, each a finite number.
pub fn assert_has(figures: &[(String, f64)], names: &[&str]) {
    for name in names {
        let Some((_, v)) = figures.iter().find(|(n, _)| n == name) else {
            panic!("no figure {name} in {figures:?}");
        };
        assert!(v.is_finite(), "{name} = {v}");
    }
}
