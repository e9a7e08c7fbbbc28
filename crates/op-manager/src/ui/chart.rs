//! Small pictures drawn on the server as inline SVG: a job's recent runs (duration over time,
//! one mark per run), the fleet's runs and failures over the last hours, and a node's load over
//! time. No script, no library and nothing fetched: each chart is a `String` built here from
//! plain data, so it is tested as a pure function, and it is styled by `console.css` (so it
//! follows the light and dark themes; the Content-Security-Policy allows no inline style).
//!
//! Every chart reads without colour. Run outcomes differ by the shape of their mark (circle ok,
//! cross failed, triangle timeout, square killed, diamond lost, ring skipped); failures in the
//! timeline are hatched; the load line has dots and the cpu count is a dashed, labelled line.
//! Each chart has a legend in words, a `<title>` and a `<desc>` that says in a sentence what it
//! shows, and every mark has its own `<title>` (a tooltip, and what a screen reader reads).
//! Every label goes through [`esc`].

use std::fmt::Write;

use chrono::{DateTime, Utc};
use op_proto::RunStatus;
use op_store::RunBucket;

use super::html::{attr, duration_ms, esc};
use crate::load_history::LoadSample;

/// The drawing's size in SVG units; CSS scales it to the card's width.
const W: f64 = 640.0;
const H: f64 = 170.0;
/// Room for the y axis labels on the left and the time labels below.
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// Maps data to drawing coordinates over the plot area.
struct Frame {
    x0: f64,
    x1: f64,
    y1: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v - self.x0) / (self.x1 - self.x0).max(f64::EPSILON) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        H - BOTTOM - v / self.y1.max(f64::EPSILON) * (H - TOP - BOTTOM)
    }
}

/// "now", "45 s ago", "12 min ago", "3 h ago", "2 d ago".
pub fn ago(secs: i64) -> String {
    match secs {
        ..=4 => "now".into(),
        5..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", (secs + 30) / 60),
        3600..=172_799 => {
            let (h, m) = (secs / 3600, (secs % 3600 + 30) / 60);
            if m == 0 || h >= 6 {
                format!("{} h ago", (secs + 1800) / 3600)
            } else {
                format!("{h} h {m} min ago")
            }
        }
        _ => format!("{} d ago", (secs + 43_200) / 86_400),
    }
}

/// "1 run", "3 runs".
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A span in the largest whole unit that fits: "6 hours", "15 minutes", "40 seconds".
fn span_words(secs: i64) -> String {
    let secs = secs.max(0) as u64;
    if secs >= 3600 && secs.is_multiple_of(3600) {
        plural(secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        plural(secs / 60, "minute")
    } else {
        plural(secs, "second")
    }
}

/// The opening of a chart: a figure with an id for scripts and tests, and an SVG that names
/// itself through its `<title>` and `<desc>`.
fn open(id: &str, title: &str, desc: &str) -> String {
    let id = attr(id);
    format!(
        "<figure class=\"chart\" id=\"chart-{id}\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-labelledby=\"chart-{id}-title chart-{id}-desc\" preserveAspectRatio=\"xMidYMid meet\">\
         <title id=\"chart-{id}-title\">{}</title><desc id=\"chart-{id}-desc\">{}</desc>",
        esc(title),
        esc(desc)
    )
}

/// The closing of a chart: the legend and the one-sentence summary under it.
fn close(out: &mut String, legend: &[(String, &str)], summary: &str) {
    out.push_str("</svg><figcaption><ul class=\"legend\">");
    for (swatch, word) in legend {
        let _ = write!(
            out,
            "<li><svg viewBox=\"-6 -6 12 12\" aria-hidden=\"true\">{swatch}</svg> {}</li>",
            esc(word)
        );
    }
    let _ = write!(
        out,
        "</ul><p class=\"summary\">{}</p></figcaption></figure>",
        esc(summary)
    );
}

/// Horizontal grid lines with their labels, at 0, half and all of `top`.
fn y_axis(out: &mut String, f: &Frame, top: f64, label: impl Fn(f64) -> String) {
    for v in [0.0, top / 2.0, top] {
        let y = f.y(v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&label(v))
        );
    }
}

/// Time labels under the plot: `ticks` of (data x, label).
fn x_axis(out: &mut String, f: &Frame, ticks: &[(f64, String)]) {
    for (i, (v, label)) in ticks.iter().enumerate() {
        let anchor = match i {
            0 => "start",
            i if i + 1 == ticks.len() => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            f.x(*v),
            H - 6.0,
            esc(label)
        );
    }
}

/// One finished run, as the job chart draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPoint {
    pub at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status: RunStatus,
    pub host: String,
}

/// The mark of a run outcome at (x, y): a shape per status, so none depends on colour.
fn run_shape(status: RunStatus, x: f64, y: f64) -> String {
    match status {
        RunStatus::Ok | RunStatus::Running => {
            format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\"/>")
        }
        RunStatus::Failed => format!(
            "<path class=\"stroke\" d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\"/>",
            x - 4.0,
            y - 4.0,
            x + 4.0,
            y + 4.0,
            x - 4.0,
            y + 4.0,
            x + 4.0,
            y - 4.0
        ),
        RunStatus::Timeout => format!(
            "<path d=\"M{x:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z\"/>",
            y - 5.0,
            x + 5.0,
            y + 4.0,
            x - 5.0,
            y + 4.0
        ),
        RunStatus::Killed => format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\"/>",
            x - 4.0,
            y - 4.0
        ),
        RunStatus::Lost => format!(
            "<path d=\"M{x:.1} {:.1}L{:.1} {y:.1}L{x:.1} {:.1}L{:.1} {y:.1}Z\"/>",
            y - 5.0,
            x + 5.0,
            y + 5.0,
            x - 5.0
        ),
        RunStatus::Skipped => {
            format!("<circle class=\"hollow\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\"/>")
        }
        // A fire that never ran: a hollow square, marked like a skip but squared.
        RunStatus::Missed => format!(
            "<rect class=\"hollow\" x=\"{:.1}\" y=\"{:.1}\" width=\"7\" height=\"7\"/>",
            x - 3.5,
            y - 3.5
        ),
    }
}

/// The colour class of a run outcome (the shape says the same without colour).
fn run_class(status: RunStatus) -> &'static str {
    if status.is_failure() {
        "bad"
    } else if status == RunStatus::Ok {
        "good"
    } else {
        "muted"
    }
}

/// A job's recent runs: one mark per run at its start time and duration, shaped by outcome,
/// all hosts together (each mark's tooltip names its host). `now` places the time labels.
pub fn runs(id: &str, points: &[RunPoint], now: DateTime<Utc>) -> String {
    let mut counts: Vec<(RunStatus, usize)> = Vec::new();
    for p in points {
        match counts.iter_mut().find(|(s, _)| *s == p.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((p.status, 1)),
        }
    }
    counts.sort_by_key(|(s, _)| *s as u8);
    let summary = if points.is_empty() {
        "No finished run to draw yet.".to_string()
    } else {
        let first = points.iter().map(|p| p.at).min().unwrap_or(now);
        let longest = points.iter().map(|p| p.duration_ms).max().unwrap_or(0);
        let age = (now - first).num_seconds();
        format!(
            "{} {}: {}; the longest took {}.",
            plural(points.len() as u64, "run"),
            if age < 60 {
                "in the last minute".to_string()
            } else {
                format!("since {}", ago(age))
            },
            counts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            duration_ms(longest)
        )
    };
    let mut out = open(id, "Duration of recent runs over time", &summary);
    let t0 = points.iter().map(|p| p.at.timestamp_millis()).min();
    let t1 = points.iter().map(|p| p.at.timestamp_millis()).max();
    // The time axis spans the runs, at least the minute before the newest.
    let (x0, x1) = match (t0, t1) {
        (Some(a), Some(b)) => (a.min(b - 60_000), b),
        _ => {
            let n = now.timestamp_millis();
            (n - 3_600_000, n)
        }
    };
    let top = points
        .iter()
        .map(|p| p.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    // A little room either side, so no mark sits on the frame.
    let pad = (x1 - x0) as f64 * 0.03;
    let f = Frame {
        x0: x0 as f64 - pad,
        x1: x1 as f64 + pad,
        y1: top,
    };
    y_axis(&mut out, &f, top, |v| duration_ms(v.round() as i64));
    let label = |ms: i64| ago((now.timestamp_millis() - ms) / 1000);
    x_axis(
        &mut out,
        &f,
        &[
            (x0 as f64, label(x0)),
            ((x0 + x1) as f64 / 2.0, label((x0 + x1) / 2)),
            (x1 as f64, label(x1)),
        ],
    );
    for p in points {
        let (x, y) = (
            f.x(p.at.timestamp_millis() as f64),
            f.y(p.duration_ms as f64),
        );
        let _ = write!(
            out,
            "<g class=\"mark {}\" data-status=\"{}\"><title>{}: {} after {}, started {}</title>{}</g>",
            run_class(p.status),
            p.status.as_str(),
            esc(&p.host),
            p.status.as_str(),
            duration_ms(p.duration_ms),
            p.at.format("%Y-%m-%d %H:%M:%S UTC"),
            run_shape(p.status, x, y)
        );
    }
    let legend: Vec<(String, &str)> = counts
        .iter()
        .map(|(s, _)| {
            (
                format!(
                    "<g class=\"mark {}\">{}</g>",
                    run_class(*s),
                    run_shape(*s, 0.0, 0.0)
                ),
                s.as_str(),
            )
        })
        .collect();
    close(&mut out, &legend, &summary);
    out
}

/// Runs and failures per slice of time over the last hours: a bar per slice, the failed part
/// hatched on top. `width_secs` is a slice's length; `now` places the time labels.
pub fn timeline(id: &str, buckets: &[RunBucket], width_secs: i64, now: DateTime<Utc>) -> String {
    let runs: u64 = buckets.iter().map(|b| b.runs).sum();
    let failed: u64 = buckets.iter().map(|b| b.failed).sum();
    let span = width_secs * buckets.len() as i64;
    let summary = format!(
        "{} and {} in the last {}, in slices of {}.",
        plural(runs, "run"),
        plural(failed, "failure"),
        span_words(span),
        span_words(width_secs)
    );
    let mut out = open(id, "Runs and failures over the last hours", &summary);
    // A pattern per chart (its id is the chart's), so two charts on a page do not share one.
    let hatch = format!("chart-{}-hatch", attr(id));
    let _ = write!(
        out,
        "<defs><pattern id=\"{hatch}\" class=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\"/></pattern></defs>"
    );
    let n = buckets.len().max(1) as f64;
    let top = (buckets.iter().map(|b| b.runs).max().unwrap_or(0).max(1) as f64 * 1.1).ceil();
    let f = Frame {
        x0: 0.0,
        x1: n,
        y1: top,
    };
    y_axis(&mut out, &f, top, |v| format!("{}", v.round() as i64));
    // The slices follow the clock, so the window ends with the slice now is in: the labels
    // count whole slices back from there.
    let ticks: Vec<(f64, String)> = [0.0, n / 2.0, n]
        .into_iter()
        .map(|i| (i, ago(((n - i) * width_secs as f64) as i64)))
        .collect();
    x_axis(&mut out, &f, &ticks);
    let bar = (W - LEFT - RIGHT) / n;
    for (i, b) in buckets.iter().enumerate().filter(|(_, b)| b.runs > 0) {
        let x = f.x(i as f64) + 1.0;
        let w = (bar - 2.0).max(1.0);
        let ok = b.runs.saturating_sub(b.failed) as f64;
        let end = b.start + chrono::Duration::seconds(width_secs);
        let _ = write!(
            out,
            "<g class=\"bucket\" data-runs=\"{}\" data-failed=\"{}\"><title>{} to {}: {} runs, {} failed</title>",
            b.runs,
            b.failed,
            ago((now - b.start).num_seconds()),
            ago((now - end).num_seconds()),
            b.runs,
            b.failed
        );
        if ok > 0.0 {
            let (y, h) = (f.y(ok), f.y(0.0) - f.y(ok));
            let _ = write!(
                out,
                "<rect class=\"ok\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/>"
            );
        }
        if b.failed > 0 {
            let all = b.runs as f64;
            let (y, h) = (f.y(all), f.y(ok) - f.y(all));
            let _ = write!(
                out,
                "<rect class=\"failed\" fill=\"url(#{hatch})\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/>"
            );
        }
        out.push_str("</g>");
    }
    let legend = vec![
        (
            "<rect class=\"ok\" x=\"-5\" y=\"-5\" width=\"10\" height=\"10\"/>".to_string(),
            "runs that did not fail",
        ),
        (
            format!(
                "<rect class=\"failed\" fill=\"url(#{hatch})\" x=\"-5\" y=\"-5\" width=\"10\" height=\"10\"/>"
            ),
            "failed, timed out, killed or lost (hatched)",
        ),
    ];
    close(&mut out, &legend, &summary);
    out
}

/// A node's one-minute load average over time, a dot per sample, with its cpu count as a dashed
/// line. `every_secs` is the sampling interval, for the words.
pub fn load(id: &str, samples: &[LoadSample], every_secs: u64, now: DateTime<Utc>) -> String {
    let cpus = samples.last().map_or(0, LoadSample::cpus);
    let peak = samples.iter().map(LoadSample::load1).fold(0.0, f64::max);
    let summary = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => format!(
            "{}, one every {}, since {}: load {:.2} now, {:.2} at most, on {cpus} cpus.",
            plural(samples.len() as u64, "sample"),
            span_words(every_secs as i64),
            ago((now - first.at()).num_seconds()),
            last.load1(),
            peak
        ),
        _ => "No load sample yet: this manager keeps the load the agent reports to it, \
              and starts empty after a restart."
            .to_string(),
    };
    let mut out = open(id, "Load average (1 min) over time", &summary);
    let x1 = now.timestamp() as f64;
    let x0 = samples
        .first()
        .map_or(x1 - 3600.0, |s| s.at().timestamp() as f64)
        .min(x1 - 60.0);
    let top = (peak.max(f64::from(cpus)).max(1.0) * 1.15 * 4.0).ceil() / 4.0;
    let f = Frame { x0, x1, y1: top };
    y_axis(&mut out, &f, top, |v| format!("{v:.2}"));
    x_axis(
        &mut out,
        &f,
        &[
            (x0, ago((x1 - x0) as i64)),
            ((x0 + x1) / 2.0, ago(((x1 - x0) / 2.0) as i64)),
            (x1, "now".into()),
        ],
    );
    if cpus > 0 {
        let y = f.y(f64::from(cpus));
        let _ = write!(
            out,
            "<line class=\"limit\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{cpus} cpus</text>",
            W - RIGHT,
            W - RIGHT,
            y - 4.0
        );
    }
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (f.x(s.at().timestamp() as f64), f.y(s.load1())))
        .collect();
    if pts.len() > 1 {
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            out,
            "<polyline class=\"line\" points=\"{}\"/>",
            line.join(" ")
        );
    }
    for (s, (x, y)) in samples.iter().zip(&pts) {
        let mem = s
            .mem_used_pct()
            .map(|m| format!(", {m}% memory in use"))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<g class=\"mark sample\"><title>load {:.2} on {} cpus{mem}, {}</title>\
             <circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"/></g>",
            s.load1(),
            s.cpus(),
            ago((now - s.at()).num_seconds())
        );
    }
    let legend = vec![
        (
            "<g class=\"mark sample\"><circle r=\"3\"/></g>".to_string(),
            "load average (1 min), a dot per sample",
        ),
        (
            "<line class=\"limit\" x1=\"-6\" x2=\"6\" y1=\"0\" y2=\"0\"/>".to_string(),
            "cpu count (dashed)",
        ),
    ];
    close(&mut out, &legend, &summary);
    out
}

#[cfg(test)]
mod tests {
    use op_proto::node::LoadInfo;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn marks(svg: &str, class: &str) -> usize {
        svg.matches(&format!("<g class=\"{class}")).count()
    }

    #[test]
    fn runs_chart_draws_a_shaped_mark_per_run_and_escapes_hosts() {
        let points = vec![
            RunPoint {
                at: t(0),
                duration_ms: 1200,
                status: RunStatus::Ok,
                host: "<b>web-1</b>".into(),
            },
            RunPoint {
                at: t(60),
                duration_ms: 3000,
                status: RunStatus::Failed,
                host: "web-2".into(),
            },
            RunPoint {
                at: t(120),
                duration_ms: 60_000,
                status: RunStatus::Timeout,
                host: "web-2".into(),
            },
        ];
        let svg = runs("job-runs", &points, t(180));
        assert_eq!(
            marks(&svg, "mark "),
            3 + 3,
            "three runs and three legend swatches"
        );
        assert_eq!(svg.matches("data-status=\"failed\"").count(), 1);
        assert!(
            svg.contains("&lt;b&gt;web-1&lt;/b&gt;: ok after 1.2 s"),
            "{svg}"
        );
        assert!(!svg.contains("<b>"));
        // Shapes tell outcomes apart: a circle, a cross (two strokes) and a triangle.
        assert!(svg.contains("<circle"));
        assert!(svg.contains("class=\"stroke\""));
        assert!(svg.contains("Z\"/>"));
        assert!(svg.contains("<title id=\"chart-job-runs-title\">"));
        assert!(
            svg.contains(
                "3 runs since 3 min ago: 1 ok, 1 failed, 1 timeout; the longest took 1 min 0 s."
            ),
            "{svg}"
        );
        // The time axis names the oldest and the newest run.
        assert!(svg.contains(">3 min ago</text>"), "{svg}");
        assert!(svg.contains(">1 min ago</text>"), "{svg}");
        // Marks stay inside the drawing (the legend's swatches are drawn apart).
        let drawing = svg.split("<figcaption>").next().unwrap();
        for y in drawing.split("cy=\"").skip(1) {
            let y: f64 = y.split('"').next().unwrap().parse().unwrap();
            assert!((TOP - 6.0..=H - BOTTOM + 6.0).contains(&y), "{y}");
        }
    }

    #[test]
    fn runs_chart_without_runs_says_so() {
        let svg = runs("x", &[], t(0));
        assert_eq!(svg.matches("data-status").count(), 0);
        assert!(svg.contains("No finished run to draw yet."));
    }

    #[test]
    fn timeline_draws_non_empty_slices_with_failures_hatched() {
        let buckets: Vec<RunBucket> = (0..24)
            .map(|i| RunBucket {
                start: t(i * 900),
                runs: if i == 23 {
                    5
                } else if i == 3 {
                    2
                } else {
                    0
                },
                failed: if i == 23 { 2 } else { 0 },
            })
            .collect();
        let svg = timeline("fleet", &buckets, 900, t(24 * 900));
        assert_eq!(marks(&svg, "bucket"), 2);
        assert!(svg.contains("data-runs=\"5\" data-failed=\"2\""));
        assert_eq!(
            svg.matches("fill=\"url(#chart-fleet-hatch)\"").count(),
            2,
            "one bar and the legend"
        );
        assert!(
            svg.contains("7 runs and 2 failures in the last 6 hours, in slices of 15 minutes."),
            "{svg}"
        );
        assert!(svg.contains(">6 h ago</text>"));
        assert!(svg.contains(">now</text>"));
    }

    #[test]
    fn load_chart_has_a_dot_per_sample_and_the_cpu_line() {
        let history = crate::load_history::LoadHistory::new(std::time::Duration::from_secs(60));
        let node = uuid::Uuid::from_u128(7);
        for i in 0..5 {
            let info = LoadInfo {
                load1: 0.5 * i as f64,
                load5: 0.0,
                load15: 0.0,
                cpus: 2,
                mem_total_kb: 100,
                mem_available_kb: 40,
            };
            history.record(node, t(i * 60), &info);
        }
        let samples = history.samples(node);
        let svg = load("load", &samples, 60, t(300));
        assert_eq!(
            marks(&svg, "mark sample"),
            5 + 1,
            "five dots and the legend's"
        );
        assert!(svg.contains("<polyline"));
        assert!(svg.contains(">2 cpus</text>"));
        assert!(
            svg.contains("5 samples, one every 1 minute, since 5 min ago: load 2.00 now"),
            "{svg}"
        );
        assert!(
            svg.contains("load 2.00 on 2 cpus, 60% memory in use, 1 min ago"),
            "{svg}"
        );
        let empty = load("load", &[], 60, t(0));
        assert!(empty.contains("No load sample yet"));
        assert!(!empty.contains("<polyline"));
    }

    #[test]
    fn ago_reads_like_a_person() {
        assert_eq!(ago(2), "now");
        assert_eq!(ago(45), "45 s ago");
        assert_eq!(ago(600), "10 min ago");
        assert_eq!(ago(5400), "1 h 30 min ago");
        assert_eq!(ago(6 * 3600), "6 h ago");
        assert_eq!(ago(3 * 86_400), "3 d ago");
    }
}
