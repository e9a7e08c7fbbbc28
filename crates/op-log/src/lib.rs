//! The daemons' logging: tracing events to stderr, without ever blocking or killing the work
//! they describe.
//!
//! A failing stderr used to stop an agent while it looked healthy, and a manager at its start
//! (issue 16, item 1): with stderr on a pipe whose reader went away (a log shipper restarting,
//! or never there), every write fails with EPIPE, and `tracing-subscriber` reports its own write
//! errors with `eprintln!`, which panics when stderr fails. So every task that logged died with
//! the line it logged: a run's supervisor (the run stayed "running"), the scheduler (no more
//! fires), the SIGTERM handler (no shutdown), the manager's start (exit 101). A reader that is
//! there but does not read would instead block every thread that logs on a full pipe.
//!
//! So events are formatted on the caller's thread and handed to one writer thread through a
//! bounded queue, so a stalled reader blocks nobody; a line that cannot be queued or written is
//! dropped and counted ([`write_failures`], exported by both daemons as a metric), and
//! `tracing-subscriber`'s own reports are off. (A stderr closed outright is not a case: Rust's
//! runtime puts `/dev/null` on a closed fd 0, 1 or 2 before `main`.)
//! Nothing here prints with `eprintln!`/`println!`: [`print_stdout`] and [`print_stderr`] are
//! the best-effort replacements for the daemons' few direct lines.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread; beyond this they are dropped (and counted).
const QUEUE_LINES: usize = 4096;

static FAILURES: AtomicU64 = AtomicU64::new(0);
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Log lines dropped since start: not written (stderr failed) or not queued (the writer was
/// stuck behind a full pipe).
pub fn write_failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Writes `line` and a newline to stdout; a failure is counted, never a panic.
pub fn print_stdout(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes `line` and a newline to stderr directly (for messages before or after logging runs);
/// a failure is counted, never a panic.
pub fn print_stderr(line: &str) {
    if writeln!(std::io::stderr().lock(), "{line}").is_err() {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer side of the queue; one per process (see [`stderr_writer`]).
#[derive(Clone, Debug)]
pub struct StderrQueue {
    tx: SyncSender<Vec<u8>>,
}

/// The process's queue to stderr, with its writer thread started at first use.
pub fn stderr_writer() -> StderrQueue {
    static QUEUE: OnceLock<StderrQueue> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
            let spawned = std::thread::Builder::new()
                .name("log-writer".into())
                .stack_size(64 * 1024)
                .spawn(move || write_lines(rx, std::io::stderr()));
            if spawned.is_err() {
                // No writer: the queue fills and every line is counted as dropped.
                print_stderr("cannot start the log writer thread; log lines are dropped");
            }
            StderrQueue { tx }
        })
        .clone()
}

fn write_lines(rx: Receiver<Vec<u8>>, mut out: impl Write) {
    for line in rx {
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        PENDING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits (at most `limit`) until the queued lines are written: call before the process exits.
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    while PENDING.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One event's bytes, queued when the formatter is done with it.
#[derive(Debug)]
pub struct QueuedLine {
    buf: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
}

impl Write for QueuedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        PENDING.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(std::mem::take(&mut self.buf)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                PENDING.fetch_sub(1, Ordering::Relaxed);
                FAILURES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for StderrQueue {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            buf: Vec::with_capacity(256),
            tx: self.tx.clone(),
        }
    }
}

/// Installs the global subscriber: `filter`, text or JSON lines, colours only on a terminal.
/// `tracing-subscriber`'s own error reports are off: they are printed with `eprintln!`, which
/// panics when stderr fails.
pub fn init(filter: tracing_subscriber::EnvFilter, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr_writer())
        .log_internal_errors(false)
        // Under systemd, stderr is the journal: no colours there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_writes_and_a_full_queue_are_counted_not_fatal() {
        let before = write_failures();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // Nobody reads yet: the first line is queued, the second is dropped and counted.
        for _ in 0..2 {
            let mut line = QueuedLine {
                buf: Vec::new(),
                tx: tx.clone(),
            };
            line.write_all(b"x\n").unwrap();
        }
        assert!(write_failures() > before);
        let after_drop = write_failures();
        drop(tx);
        write_lines(rx, Broken);
        assert!(write_failures() > after_drop);
    }
}
