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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// Room kept for the marker line between the head and the tail of a cut file.
const MARKER_ROOM: u64 = 160;

/// The run's log file: where it is (the ring file goes beside it) and the open file.
pub struct LogFile {
    pub path: PathBuf,
    pub file: std::fs::File,
}

/// Output past the cap: the last `cap` bytes, written round-robin into an unlinked file.
struct Ring {
    file: std::fs::File,
    cap: u64,
    /// Bytes ever written into the ring.
    written: u64,
}

impl Ring {
    fn create(beside: &Path, cap: u64) -> std::io::Result<Ring> {
        let name = format!(
            ".{}.cut",
            beside.file_name().and_then(|n| n.to_str()).unwrap_or("run")
        );
        let path = beside.with_file_name(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // Unlinked at once: a crash leaves nothing behind, the open handle keeps the data.
        std::fs::remove_file(&path)?;
        Ok(Ring {
            file,
            cap,
            written: 0,
        })
    }

    fn push(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        if self.cap == 0 {
            self.written += chunk.len() as u64;
            return Ok(());
        }
        if chunk.len() as u64 > self.cap {
            let skip = chunk.len() - self.cap as usize;
            self.written += skip as u64;
            chunk = &chunk[skip..];
        }
        while !chunk.is_empty() {
            let at = self.written % self.cap;
            let n = chunk.len().min((self.cap - at) as usize);
            self.file.write_all_at(&chunk[..n], at)?;
            self.written += n as u64;
            chunk = &chunk[n..];
        }
        Ok(())
    }

    /// Bytes the ring holds (the last ones written).
    fn held(&self) -> u64 {
        self.written.min(self.cap)
    }

    /// Appends the held bytes, oldest first, to `out`.
    fn copy_to(&self, out: &mut std::fs::File) -> std::io::Result<()> {
        let held = self.held();
        let start = if self.written > self.cap {
            self.written % self.cap
        } else {
            0
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut done = 0;
        while done < held {
            let at = (start + done) % self.cap;
            let n = ((held - done).min(self.cap - at) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], at)?;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

struct Sink {
    file: Option<LogFile>,
    file_written: u64,
    file_limit: u64,
    file_error: Option<String>,
    /// Set once the output outgrew the file's cap.
    ring: Option<Ring>,
    tail: VecDeque<u8>,
    tail_limit: usize,
    total: u64,
}

impl Sink {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if let Err(e) = self.push_file(chunk) {
            self.file_error = Some(format!("writing the log file: {e}"));
            self.file = None;
            self.ring = None;
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

    fn push_file(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let Some(log) = &mut self.file else {
            return Ok(());
        };
        if let Some(ring) = &mut self.ring {
            return ring.push(chunk);
        }
        let room = self.file_limit.saturating_sub(self.file_written) as usize;
        let part = &chunk[..chunk.len().min(room)];
        log.file.write_all(part)?;
        self.file_written += part.len() as u64;
        if part.len() == chunk.len() {
            return Ok(());
        }
        // Over the cap: the file keeps its first half; the last part of what it holds beyond
        // that moves to the ring, which from now on holds the newest output.
        let head = self.file_limit / 2;
        let ring_cap = self.file_limit.saturating_sub(head + MARKER_ROOM);
        let mut ring = Ring::create(&log.path, ring_cap)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = head.max(self.file_written.saturating_sub(ring_cap));
        while at < self.file_written {
            let n = ((self.file_written - at) as usize).min(buf.len());
            log.file.read_exact_at(&mut buf[..n], at)?;
            ring.push(&buf[..n])?;
            at += n as u64;
        }
        ring.push(&chunk[part.len()..])?;
        log.file.set_len(head)?;
        log.file.seek(SeekFrom::Start(head))?;
        self.file_written = head;
        self.ring = Some(ring);
        Ok(())
    }

    /// Completes a cut file: the marker, then the tail from the ring.
    fn close_file(&mut self) {
        let (Some(log), Some(ring)) = (&mut self.file, &self.ring) else {
            if let Some(log) = &mut self.file {
                let _ = log.file.flush();
            }
            return;
        };
        let cut = self.total - self.file_written - ring.held();
        let result = writeln!(
            log.file,
            "\n[op-agent: {cut} bytes of output cut here; this file keeps the first {} and the last {} of {} bytes]",
            self.file_written,
            ring.held(),
            self.total
        )
        .and_then(|()| ring.copy_to(&mut log.file))
        .and_then(|()| log.file.flush());
        if let Err(e) = result {
            self.file_error = Some(format!("writing the log file: {e}"));
        }
    }

    fn finish(mut self) -> Captured {
        self.close_file();
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
        file: Option<LogFile>,
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
            ring: None,
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
            // Completing a cut file copies up to the cap: not on a runtime thread.
            tokio::task::spawn_blocking(move || sink.finish())
                .await
                .unwrap_or_default()
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

    fn sink(tail_limit: usize, file_limit: u64, file: Option<LogFile>) -> Sink {
        Sink {
            file,
            file_written: 0,
            file_limit,
            file_error: None,
            ring: None,
            tail: VecDeque::new(),
            tail_limit,
            total: 0,
        }
    }

    fn log_file(path: &Path) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            file: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .unwrap(),
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
    fn output_within_the_cap_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let mut s = sink(4, 1000, Some(log_file(&path)));
        s.push(b"0123");
        s.push(b"4567");
        s.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "01234567");
    }

    #[test]
    fn file_over_its_cap_keeps_head_and_tail_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let cap = 1000u64;
        let mut s = sink(4, cap, Some(log_file(&path)));
        // 10,000 numbered lines in odd-sized chunks, so the cut and the ring wrap mid-chunk.
        let all: String = (0..10_000).map(|i| format!("line {i:05}\n")).collect();
        for chunk in all.as_bytes().chunks(777) {
            s.push(chunk);
        }
        let c = s.finish();
        assert_eq!(c.total, all.len() as u64);
        assert!(c.file_error.is_none(), "{:?}", c.file_error);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= cap, "{} > {cap}", text.len());
        let (head, rest) = text.split_once("\n[op-agent: ").unwrap();
        let (marker, tail) = rest.split_once('\n').unwrap();
        assert_eq!(head.len() as u64, cap / 2);
        assert!(all.starts_with(head));
        assert!(all.ends_with(tail), "{tail}");
        let cut = all.len() - head.len() - tail.len();
        assert!(
            marker.starts_with(&format!("{cut} bytes of output cut here")),
            "{marker}"
        );
        // Nothing is left beside the log: the ring file was unlinked at once.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let (tail, truncated, len) = read_file_tail(&path, 8).unwrap();
        assert!(truncated);
        assert_eq!(tail, "e 09999\n");
        assert_eq!(len, text.len() as u64);
    }

    #[test]
    fn one_huge_chunk_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let mut s = sink(4, 400, Some(log_file(&path)));
        s.push(b"ab");
        s.push(&[b'x'; 5000]);
        s.push(b"yz");
        s.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= 400);
        assert!(text.starts_with("abxxx"));
        assert!(text.ends_with("xxyz"));
        assert!(text.contains("bytes of output cut here"));
    }
}
