//! Capturing a run's merged output: to its log file and to a bounded in-memory tail.
//!
//! The reader keeps draining the pipe whatever the limits, because a job blocked on a full pipe
//! would never finish. The log file stops growing at its cap (with a marker line) and the tail
//! keeps the last `tail_limit` bytes. When the supervisor says the process group is gone, the
//! reader gives EOF a short grace and then stops: a process that escaped the group (it called
//! `setsid` itself) may hold the pipe open forever.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the capture saw.
#[derive(Debug, Default)]
pub struct Captured {
    /// The last bytes, lossy UTF-8, starting at a character boundary.
    pub tail: String,
    pub truncated: bool,
    pub total: u64,
    /// Set when writing the log file failed (the run still completes).
    pub file_error: Option<String>,
}

/// A running capture.
pub struct Capture {
    task: JoinHandle<Captured>,
    stop: watch::Sender<Option<Instant>>,
}

struct Sink {
    file: Option<std::fs::File>,
    file_written: u64,
    file_limit: u64,
    file_error: Option<String>,
    tail: VecDeque<u8>,
    tail_limit: usize,
    total: u64,
}

impl Sink {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if let Some(file) = &mut self.file {
            let room = self.file_limit.saturating_sub(self.file_written) as usize;
            let part = &chunk[..chunk.len().min(room)];
            let mut result = file.write_all(part);
            self.file_written += part.len() as u64;
            if result.is_ok() && part.len() < chunk.len() {
                result = writeln!(
                    file,
                    "\n[op-agent: this file reached its limit of {} bytes; later output is not kept]",
                    self.file_limit
                );
                self.file = None;
            }
            if let Err(e) = result {
                self.file_error = Some(format!("writing the log file: {e}"));
                self.file = None;
            }
        }
        if chunk.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&chunk[chunk.len() - self.tail_limit..]);
        } else {
            let excess = (self.tail.len() + chunk.len()).saturating_sub(self.tail_limit);
            self.tail.drain(..excess);
            self.tail.extend(chunk);
        }
    }

    fn finish(self) -> Captured {
        let truncated = self.total > self.tail.len() as u64;
        let bytes: Vec<u8> = self.tail.into_iter().collect();
        Captured {
            tail: tail_text(&bytes, truncated),
            truncated,
            total: self.total,
            file_error: self.file_error,
        }
    }
}

/// Lossy text of a tail; a cut tail starts at the next character boundary.
fn tail_text(bytes: &[u8], truncated: bool) -> String {
    let start = if truncated {
        bytes
            .iter()
            .position(|b| (b & 0xC0) != 0x80)
            .unwrap_or(bytes.len())
    } else {
        0
    };
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

impl Capture {
    /// Starts reading `pipe` (the read end of the job's output pipe).
    pub fn start(
        pipe: OwnedFd,
        file: Option<std::fs::File>,
        tail_limit: usize,
        file_limit: u64,
    ) -> std::io::Result<Capture> {
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)?;
        let (stop, mut stop_rx) = watch::channel(None::<Instant>);
        let mut sink = Sink {
            file,
            file_written: 0,
            file_limit,
            file_error: None,
            tail: VecDeque::new(),
            tail_limit: tail_limit.max(1),
            total: 0,
        };
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let stop_at = *stop_rx.borrow_and_update();
                tokio::select! {
                    read = rx.read(&mut buf) => match read {
                        Ok(0) => break,
                        Ok(n) => sink.push(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    },
                    _ = sleep_until_opt(stop_at) => break,
                    changed = stop_rx.changed(), if stop_at.is_none() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
            if let Some(file) = &mut sink.file {
                let _ = file.flush();
            }
            sink.finish()
        });
        Ok(Capture { task, stop })
    }

    /// Waits for EOF for at most `grace`, then returns what was captured.
    pub async fn finish(self, grace: Duration) -> Captured {
        let _ = self.stop.send(Some(Instant::now() + grace));
        self.task.await.unwrap_or_default()
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The last `limit` bytes of a log file, for runs found in flight after a restart.
pub fn read_file_tail(path: &Path, limit: usize) -> Option<(String, bool, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(limit as u64);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    f.take(limit as u64).read_to_end(&mut bytes).ok()?;
    Some((tail_text(&bytes, start > 0), start > 0, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(tail_limit: usize, file_limit: u64, file: Option<std::fs::File>) -> Sink {
        Sink {
            file,
            file_written: 0,
            file_limit,
            file_error: None,
            tail: VecDeque::new(),
            tail_limit,
            total: 0,
        }
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut s = sink(5, 0, None);
        s.push(b"abc");
        s.push(b"defg");
        s.push(b"h");
        let c = s.finish();
        assert_eq!(c.tail, "defgh");
        assert!(c.truncated);
        assert_eq!(c.total, 8);
        let mut s = sink(5, 0, None);
        s.push(b"0123456789");
        assert_eq!(s.finish().tail, "56789");
        let mut s = sink(5, 0, None);
        s.push(b"abc");
        let c = s.finish();
        assert!(!c.truncated);
    }

    #[test]
    fn cut_tail_starts_at_a_character() {
        // "é" is two bytes; a tail starting in its middle drops the orphan byte.
        assert_eq!(tail_text("xé!".as_bytes()[2..].as_ref(), true), "!");
    }

    #[test]
    fn file_is_capped_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let mut s = sink(4, 6, Some(std::fs::File::create(&path).unwrap()));
        s.push(b"0123");
        s.push(b"4567");
        s.push(b"89");
        let c = s.finish();
        assert_eq!(c.total, 10);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("012345\n[op-agent: this file reached its limit"),
            "{text}"
        );
        let (tail, truncated, len) = read_file_tail(&path, 8).unwrap();
        assert!(truncated);
        assert_eq!(tail.len(), 8);
        assert_eq!(len, text.len() as u64);
    }
}
