//! docs/config.md is current (issue 12): its generated tables equal what the binaries print with
//! `--print-config-reference`. When this fails, run `scripts/gen-config-docs` and commit.

use std::process::Command;

use crate::metrics::repo_root;

#[test]
fn the_config_reference_in_docs_is_current() {
    let doc = std::fs::read_to_string(repo_root().join("docs/config.md")).expect("docs/config.md");
    for name in ["op-manager", "op-agent"] {
        let out = Command::new(op_testkit::bin(name))
            .arg("--print-config-reference")
            .output()
            .expect("run the binary");
        assert!(out.status.success(), "{name} --print-config-reference");
        let table = String::from_utf8(out.stdout).expect("utf-8");
        assert!(table.lines().count() > 10, "{table}");
        let begin = format!("<!-- BEGIN {name} --print-config-reference -->\n");
        let end = format!("<!-- END {name} -->");
        let section = doc
            .split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(inside, _)| inside)
            .unwrap_or_else(|| panic!("docs/config.md has no generated section for {name}"));
        assert_eq!(
            section.trim_end(),
            table.trim_end(),
            "docs/config.md is stale for {name}: run scripts/gen-config-docs and commit the result"
        );
    }
}
