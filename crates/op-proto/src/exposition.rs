//! The Prometheus text exposition format (version 0.0.4), which both daemons serve on `/metrics`.
//!
//! `prometheus-client` encodes OpenMetrics 1.0: a counter family is declared as `# TYPE runs
//! counter` while its samples are named `runs_total`, and the output carries `# UNIT` and
//! `# EOF` lines. Prometheus itself reads either, but the classic text parser (the one behind
//! `promtool check metrics`, most exporters' tests and many scrapers besides Prometheus) takes
//! `runs_total` for a second, undeclared family. [`openmetrics_to_prometheus`] rewrites the
//! encoder's output into the classic form, so that every family is declared under the name its
//! samples carry. It is a pure text transformation; the registries stay in the daemons.

/// The `Content-Type` of [`openmetrics_to_prometheus`]'s output.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text (as `prometheus_client::encoding::text::encode` writes it) into the
/// Prometheus 0.0.4 text format:
/// - a `counter` family is declared as `NAME_total`, the name of its samples;
/// - an `info` family becomes a `gauge` named `NAME_info`;
/// - `# UNIT` and `# EOF` lines are dropped (the unit is already the name's suffix).
///
/// Sample lines pass through unchanged.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The encoder writes HELP before TYPE; hold HELP until TYPE says how to name the family.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, pending_help.take());
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (renamed, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" | "gaugehistogram" | "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            match pending_help.take() {
                Some((help_name, help)) if help_name == name => {
                    flush_help(&mut out, Some((&renamed, help)));
                }
                other => flush_help(&mut out, other),
            }
            out.push_str("# TYPE ");
            out.push_str(&renamed);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, pending_help.take());
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, pending_help.take());
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_info_and_units_are_rewritten() {
        let open = "# HELP op_runs Finished runs.\n# TYPE op_runs counter\nop_runs_total{status=\"ok\"} 2\n\
                    # HELP op_build Build.\n# TYPE op_build info\nop_build_info{version=\"1\"} 1\n\
                    # HELP op_size_bytes Size.\n# TYPE op_size_bytes gauge\n# UNIT op_size_bytes bytes\nop_size_bytes 3\n\
                    # HELP op_d_seconds Duration.\n# TYPE op_d_seconds histogram\nop_d_seconds_sum 0.0\nop_d_seconds_count 0\nop_d_seconds_bucket{le=\"+Inf\"} 0\n\
                    # EOF\n";
        let classic = openmetrics_to_prometheus(open);
        assert_eq!(
            classic,
            "# HELP op_runs_total Finished runs.\n# TYPE op_runs_total counter\nop_runs_total{status=\"ok\"} 2\n\
             # HELP op_build_info Build.\n# TYPE op_build_info gauge\nop_build_info{version=\"1\"} 1\n\
             # HELP op_size_bytes Size.\n# TYPE op_size_bytes gauge\nop_size_bytes 3\n\
             # HELP op_d_seconds Duration.\n# TYPE op_d_seconds histogram\nop_d_seconds_sum 0.0\nop_d_seconds_count 0\nop_d_seconds_bucket{le=\"+Inf\"} 0\n"
        );
    }
}
