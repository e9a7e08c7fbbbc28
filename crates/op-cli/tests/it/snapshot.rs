//! Snapshot files for CLI output: `tests/data/snapshots/NAME.txt`. Times and other values that
//! change from run to run are replaced by placeholders before comparing. Set
//! `UPDATE_SNAPSHOTS=1` to rewrite the files after an intended change, then review the diff.

use std::path::PathBuf;

/// Replaces `YYYY-MM-DD HH:MM:SS` with `<TIME>` and UUIDs with `<ID>`, keeping column widths
/// stable by trimming the padding that follows.
pub fn normalize(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut l = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if is_time_at(&chars[i..]) {
                l.push_str("<TIME>");
                i += 19;
            } else if is_uuid_at(&chars[i..]) {
                l.push_str("<ID>");
                i += 36;
            } else {
                l.push(chars[i]);
                i += 1;
            }
        }
        // Column padding depends on the replaced widths; compare cells, not spaces.
        let cells: Vec<&str> = l.split('\t').map(str::trim_end).collect();
        out.push(cells.join("\t").trim_end().to_string());
    }
    out.join("\n") + "\n"
}

fn is_time_at(c: &[char]) -> bool {
    let pat = "dddd-dd-dd dd:dd:dd";
    c.len() >= pat.len()
        && pat.chars().zip(c).all(|(p, ch)| {
            if p == 'd' {
                ch.is_ascii_digit()
            } else {
                p == *ch
            }
        })
}

fn is_uuid_at(c: &[char]) -> bool {
    c.len() >= 36
        && c[..36].iter().enumerate().all(|(i, ch)| {
            if [8, 13, 18, 23].contains(&i) {
                *ch == '-'
            } else {
                ch.is_ascii_hexdigit()
            }
        })
}

/// Compares `actual` (normalized) with the snapshot file `name`.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/snapshots")
        .join(format!("{name}.txt"));
    let actual = normalize(actual);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "snapshot {name} differs; run with UPDATE_SNAPSHOTS=1 to update"
    );
}

#[test]
fn normalization() {
    assert_eq!(
        normalize("A  \tB\nx  \t2026-11-25 10:54:38 0190e7c8-1b2c-7d3e-8f40-123456789abc  \n"),
        "A\tB\nx\t<TIME> <ID>\n"
    );
}
