//! How results reach the operator: tables in the seed's shape and JSON.
//!
//! The seed printed with tablewriter: upper-case headers, no borders, columns padded and separated
//! by a tab. We keep that look so scripts that cut columns keep working, and size nothing to the
//! terminal unless asked to. A list in a cell (a host's IPs, labels) is joined with commas, so
//! every table has one row per node, job or run; only free text (a run's output) spans lines.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Local, Utc};
use serde::Serialize;

/// Set when a write to stdout failed because its reader went away (`agentcli ... | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away. Only then may a failed command end quietly: a broken
/// pipe on a network connection is an error like any other.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Stdout for a command's results. Every command writes through this, so a closed stdout is
/// recorded where it happens instead of guessed from an error chain later.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

/// Locked stdout that remembers a broken pipe (see [`stdout_closed`]).
pub struct Stdout(io::StdoutLock<'static>);

fn note<T>(result: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
    result
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        note(self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        note(self.0.flush())
    }
}

/// A table of text cells; a cell may hold several lines.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the table: each column as wide as its widest line plus a tab stop.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                for line in cell.lines() {
                    widths[i] = widths[i].max(line.chars().count());
                }
            }
        }
        write_line(out, &self.headers, &widths)?;
        for row in &self.rows {
            let split: Vec<Vec<&str>> = (0..cols)
                .map(|i| {
                    let cell = row.get(i).map(String::as_str).unwrap_or("");
                    let lines: Vec<&str> = cell.lines().collect();
                    if lines.is_empty() { vec![""] } else { lines }
                })
                .collect();
            let height = split.iter().map(Vec::len).max().unwrap_or(1);
            for l in 0..height {
                let line: Vec<String> = split
                    .iter()
                    .map(|c| c.get(l).copied().unwrap_or("").to_string())
                    .collect();
                write_line(out, &line, &widths)?;
            }
        }
        Ok(())
    }
}

fn write_line(out: &mut impl Write, cells: &[String], widths: &[usize]) -> io::Result<()> {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        line.push_str(cell);
        if i + 1 < cells.len() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
            line.push('\t');
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// Prints a value as pretty JSON.
pub fn write_json<T: Serialize + ?Sized>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// A time as the seed printed it: local, `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A progress bar for a transfer of `len` bytes (a byte counter when unknown), drawn on stderr
/// only when stderr is a terminal and the output is not JSON, so scripts and pipes never see it.
pub fn transfer_bar(len: Option<u64>, json: bool, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_message(what.to_string());
    bar
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3725` → `1h2m5s` (a negative span, from clocks apart, is `0s`).
pub fn human_secs(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_for_people() {
        assert_eq!(human_secs(3725), "1h2m5s");
        assert_eq!(human_secs(65), "1m5s");
        assert_eq!(human_secs(-3), "0s");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100 << 20), "100.0 MiB");
    }

    #[test]
    fn table_shape() {
        let mut t = Table::new(&["hostname", "ip"]);
        t.row(["op-agent-test01", "192.168.1.1\n10.0.0.1"]);
        t.row(["b", "192.168.1.2"]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HOSTNAME       \tIP\nop-agent-test01\t192.168.1.1\n               \t10.0.0.1\nb              \t192.168.1.2\n"
        );
    }
}
