//! Capturing a run's output: stdout and stderr merged into its log file and a bounded in-memory
//! tail, and the tail of stderr alone (where the failure signature comes from, DESIGN 13.2).
//!
//! One task reads both pipes and appends each chunk to the merged log as it arrives, so the log
//! keeps the order of the job's writes as the reader sees them. The caveat of two pipes: writes
//! to the two streams that land between two reads (the reader was busy, or the job wrote both
//! within microseconds) are merged in the order the reader picks them up, which can differ from
//! the order the job made them. Within one stream the order is always kept. (One pipe for both
//! keeps the exact order but cannot tell stderr apart; a pty merges them too; a datagram socket
//! keeps order and source but refuses a write larger than its buffer, which would break jobs.)
//!
//! The reader keeps draining both pipes whatever the limits, because a job blocked on a full pipe
//! would never finish. The log file stops growing at its cap (with a marker line), the tail keeps
//! the last `tail_limit` bytes and the stderr tail the last [`STDERR_TAIL`] (at most
//! `tail_limit`). When the supervisor says the process group is gone, the reader gives EOF a
//! short grace and then stops: a process that escaped the group (it called `setsid` itself) may
//! hold a pipe open forever.

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

use op_proto::run::STDERR_TAIL;

/// What the capture saw.
#[derive(Debug, Default)]
pub struct Captured {
    /// The last bytes, lossy UTF-8, starting at a character boundary.
    pub tail: String,
    pub truncated: bool,
    pub total: u64,
    /// The last bytes written on stderr alone, lossy UTF-8, starting at a character boundary.
    pub stderr_tail: String,
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

/// The run's log file: where it is (the ring file goes beside it) and, once the run wrote
/// something, the open file. It is created (with its job's directory) at the first output, so a
/// run that writes nothing leaves no file: readers take a missing file of such a run as empty
/// output. Measured: creating, listing and deleting an empty file per run was a sixth of an
/// agent's CPU in `exec --all -- true` to 20 agents on one machine.
pub struct LogFile {
    pub path: PathBuf,
    file: Option<std::fs::File>,
}

impl LogFile {
    /// The log file at `path`, created at the first output.
    pub fn at_first_output(path: PathBuf) -> LogFile {
        LogFile { path, file: None }
    }

    /// The open file, created now (0600, in a 0700 directory) if this is the first output.
    fn open(&mut self) -> std::io::Result<&mut std::fs::File> {
        if self.file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(dir) = self.path.parent() {
                crate::state::private_dir(dir)?;
            }
            // A run's output is its owner's only, like the rest of the state dir; readable too:
            // output past the cap moves its middle out of it.
            let file = std::fs::OpenOptions::new()
                .mode(0o600)
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)?;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }
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
    stderr_tail: VecDeque<u8>,
    stderr_limit: usize,
    stderr_total: u64,
}

/// Which of the job's streams a chunk was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Appends `chunk` to `tail`, keeping its last `limit` bytes.
fn keep_last(tail: &mut VecDeque<u8>, chunk: &[u8], limit: usize) {
    if chunk.len() >= limit {
        tail.clear();
        tail.extend(&chunk[chunk.len() - limit..]);
    } else {
        let excess = (tail.len() + chunk.len()).saturating_sub(limit);
        tail.drain(..excess);
        tail.extend(chunk);
    }
}

impl Sink {
    fn push(&mut self, chunk: &[u8], stream: Stream) {
        self.total += chunk.len() as u64;
        if let Err(e) = self.push_file(chunk) {
            self.file_error = Some(format!("writing the log file: {e}"));
            self.file = None;
            self.ring = None;
        }
        keep_last(&mut self.tail, chunk, self.tail_limit);
        if stream == Stream::Stderr {
            self.stderr_total += chunk.len() as u64;
            keep_last(&mut self.stderr_tail, chunk, self.stderr_limit);
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
        log.open()?.write_all(part)?;
        self.file_written += part.len() as u64;
        if part.len() == chunk.len() {
            return Ok(());
        }
        // Over the cap: the file keeps its first half; the last part of what it holds beyond
        // that moves to the ring, which from now on holds the newest output.
        let head = self.file_limit / 2;
        let ring_cap = self.file_limit.saturating_sub(head + MARKER_ROOM);
        let mut ring = Ring::create(&log.path, ring_cap)?;
        let file = log.open()?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = head.max(self.file_written.saturating_sub(ring_cap));
        while at < self.file_written {
            let n = ((self.file_written - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            ring.push(&buf[..n])?;
            at += n as u64;
        }
        ring.push(&chunk[part.len()..])?;
        file.set_len(head)?;
        file.seek(SeekFrom::Start(head))?;
        self.file_written = head;
        self.ring = Some(ring);
        Ok(())
    }

    /// Completes a cut file: the marker, then the tail from the ring.
    fn close_file(&mut self) {
        let (
            Some(LogFile {
                file: Some(file), ..
            }),
            Some(ring),
        ) = (&mut self.file, &self.ring)
        else {
            if let Some(LogFile {
                file: Some(file), ..
            }) = &mut self.file
            {
                let _ = file.flush();
            }
            return;
        };
        let cut = self.total - self.file_written - ring.held();
        let result = writeln!(
            file,
            "\n[op-agent: {cut} bytes of output cut here; this file keeps the first {} and the last {} of {} bytes]",
            self.file_written,
            ring.held(),
            self.total
        )
        .and_then(|()| ring.copy_to(file))
        .and_then(|()| file.flush());
        if let Err(e) = result {
            self.file_error = Some(format!("writing the log file: {e}"));
        }
    }

    fn finish(mut self) -> Captured {
        self.close_file();
        let truncated = self.total > self.tail.len() as u64;
        let bytes: Vec<u8> = self.tail.into_iter().collect();
        let stderr_cut = self.stderr_total > self.stderr_tail.len() as u64;
        let stderr: Vec<u8> = self.stderr_tail.into_iter().collect();
        Captured {
            tail: tail_text(&bytes, truncated),
            truncated,
            total: self.total,
            stderr_tail: tail_text(&stderr, stderr_cut),
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

/// Replaces every secret value in a stream with [`op_proto::secret::MASK`] before anything
/// (log file, tail, stderr tail) sees it (issue 24).
///
/// A value may arrive split across two reads, so the bytes at the end of a read that could be
/// the start of a value (at most the longest value's length minus one) are held back until the
/// next read (or the end of the stream) tells whether they are. Values are tried longest first,
/// and a longer value that may still be completing wins over a shorter one that already matched.
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first.
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    pub fn new(values: &[String]) -> Masker {
        let mut secrets: Vec<Vec<u8>> = values
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| v.as_bytes().to_vec())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker {
            secrets,
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The masked bytes of `chunk` that are final now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        self.scan(&buf, false)
    }

    /// The end of the stream: whatever was held back, masked.
    pub fn flush(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.held);
        self.scan(&buf, true)
    }

    fn scan(&mut self, buf: &[u8], last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'bytes: while i < buf.len() {
            let rest = &buf[i..];
            for s in &self.secrets {
                if rest.starts_with(s) {
                    out.extend_from_slice(op_proto::secret::MASK.as_bytes());
                    i += s.len();
                    continue 'bytes;
                }
                if !last && rest.len() < s.len() && s.starts_with(rest) {
                    self.held = rest.to_vec();
                    return out;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }
}

/// Feeds `chunk` through the stream's masker (when there are secrets) into the sink.
fn feed(sink: &mut Sink, mask: &mut Masker, chunk: &[u8], stream: Stream) {
    if mask.is_empty() {
        sink.push(chunk, stream);
    } else {
        let out = mask.push(chunk);
        if !out.is_empty() {
            sink.push(&out, stream);
        }
    }
}

impl Capture {
    /// Starts reading `stdout` and `stderr` (the read ends of the job's pipes).
    pub fn start(
        stdout: OwnedFd,
        stderr: OwnedFd,
        file: Option<LogFile>,
        tail_limit: usize,
        file_limit: u64,
    ) -> std::io::Result<Capture> {
        Capture::start_masked(stdout, stderr, file, tail_limit, file_limit, &[])
    }

    /// [`Capture::start`], with every value in `secrets` masked in everything captured.
    pub fn start_masked(
        stdout: OwnedFd,
        stderr: OwnedFd,
        file: Option<LogFile>,
        tail_limit: usize,
        file_limit: u64,
        secrets: &[String],
    ) -> std::io::Result<Capture> {
        let mut out_mask = Masker::new(secrets);
        let mut err_mask = Masker::new(secrets);
        let mut out = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?;
        let mut err = tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)?;
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
            stderr_tail: VecDeque::new(),
            stderr_limit: STDERR_TAIL.min(tail_limit).max(1),
            stderr_total: 0,
        };
        let task = tokio::spawn(async move {
            // One buffer per stream: both reads are pending at once. A read that loses the race
            // is dropped unfinished, which loses nothing (a pipe read is cancel-safe).
            let mut out_buf = vec![0u8; 8192];
            let mut err_buf = vec![0u8; 8192];
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                let stop_at = *stop_rx.borrow_and_update();
                tokio::select! {
                    read = out.read(&mut out_buf), if out_open => match read {
                        Ok(0) => out_open = false,
                        Ok(n) => feed(&mut sink, &mut out_mask, &out_buf[..n], Stream::Stdout),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => out_open = false,
                    },
                    read = err.read(&mut err_buf), if err_open => match read {
                        Ok(0) => err_open = false,
                        Ok(n) => feed(&mut sink, &mut err_mask, &err_buf[..n], Stream::Stderr),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => err_open = false,
                    },
                    _ = sleep_until_opt(stop_at) => break,
                    changed = stop_rx.changed(), if stop_at.is_none() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
            for (mask, stream) in [
                (&mut out_mask, Stream::Stdout),
                (&mut err_mask, Stream::Stderr),
            ] {
                let rest = mask.flush();
                if !rest.is_empty() {
                    sink.push(&rest, stream);
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
            stderr_tail: VecDeque::new(),
            stderr_limit: tail_limit,
            stderr_total: 0,
        }
    }

    fn log_file(path: &Path) -> LogFile {
        LogFile::at_first_output(path.to_path_buf())
    }

    #[test]
    fn no_output_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job").join("run.log");
        let s = sink(64, 1 << 20, Some(log_file(&path)));
        let got = s.finish();
        assert_eq!((got.total, got.file_error), (0, None));
        assert!(!path.exists() && !path.parent().unwrap().exists());
        let mut s = sink(64, 1 << 20, Some(log_file(&path)));
        s.push(b"x", Stream::Stdout);
        s.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o600, 0o700));
    }

    /// Every way of cutting the output into reads gives the same masked text.
    #[test]
    fn masking_holds_values_split_across_reads() {
        let secrets = vec!["hunter2".to_string(), "pass".to_string(), "xyz".to_string()];
        let input = b"pw=hunter2; hunter pass hunter2hunter2 xy xyz passxyz hunte".to_vec();
        let want = "pw=***; hunter *** ****** xy *** ****** hunte";
        for cut in 0..=input.len() {
            for cut2 in cut..=input.len() {
                let mut m = Masker::new(&secrets);
                let mut out = m.push(&input[..cut]);
                out.extend(m.push(&input[cut..cut2]));
                out.extend(m.push(&input[cut2..]));
                out.extend(m.flush());
                assert_eq!(String::from_utf8(out).unwrap(), want, "cuts {cut} {cut2}");
            }
        }
        // One byte at a time, and what is held is never more than the longest value less one.
        let mut m = Masker::new(&secrets);
        let mut out = Vec::new();
        for b in &input {
            out.extend(m.push(std::slice::from_ref(b)));
            assert!(m.held.len() < "hunter2".len());
        }
        out.extend(m.flush());
        assert_eq!(String::from_utf8(out).unwrap(), want);
        // A value cut at the very end of the stream is not a value: the held bytes come out.
        let mut m = Masker::new(&secrets);
        let mut out = m.push(b"end: hunter");
        out.extend(m.flush());
        assert_eq!(String::from_utf8(out).unwrap(), "end: hunter");
        // A longer value that may still be completing wins over a shorter one inside it.
        let input = b"abcd abc";
        for cut in 0..=input.len() {
            let mut m = Masker::new(&["ab".to_string(), "abcd".to_string()]);
            let mut out = m.push(&input[..cut]);
            out.extend(m.push(&input[cut..]));
            out.extend(m.flush());
            assert_eq!(String::from_utf8(out).unwrap(), "*** ***c", "cut {cut}");
        }
    }

    #[test]
    fn masked_output_reaches_file_tail_and_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.log");
        let mut s = sink(64, 1 << 20, Some(log_file(&path)));
        let mut out = Masker::new(&["s3cr3t".to_string()]);
        let mut err = Masker::new(&["s3cr3t".to_string()]);
        feed(&mut s, &mut out, b"value s3c", Stream::Stdout);
        feed(&mut s, &mut err, b"error: s3", Stream::Stderr);
        feed(&mut s, &mut out, b"r3t\n", Stream::Stdout);
        feed(&mut s, &mut err, b"cr3t\n", Stream::Stderr);
        let c = s.finish();
        let file = std::fs::read_to_string(&path).unwrap();
        for text in [&c.tail, &c.stderr_tail, &file] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut s = sink(5, 0, None);
        s.push(b"abc", Stream::Stdout);
        s.push(b"defg", Stream::Stdout);
        s.push(b"h", Stream::Stdout);
        let c = s.finish();
        assert_eq!(c.tail, "defgh");
        assert!(c.truncated);
        assert_eq!(c.total, 8);
        let mut s = sink(5, 0, None);
        s.push(b"0123456789", Stream::Stdout);
        assert_eq!(s.finish().tail, "56789");
        let mut s = sink(5, 0, None);
        s.push(b"abc", Stream::Stdout);
        let c = s.finish();
        assert!(!c.truncated);
    }

    #[test]
    fn stderr_keeps_its_own_tail_and_joins_the_merged_one() {
        let mut s = sink(64, 0, None);
        s.stderr_limit = 8;
        s.push(b"fine\n", Stream::Stdout);
        s.push(b"warning: x\nboom\n", Stream::Stderr);
        s.push(b"more\n", Stream::Stdout);
        let c = s.finish();
        assert_eq!(c.tail, "fine\nwarning: x\nboom\nmore\n");
        // The last 8 bytes written on stderr, and stdout's writes are not among them.
        assert_eq!(c.stderr_tail, " x\nboom\n");
        assert_eq!(c.total, 26);
        let c = sink(64, 0, None).finish();
        assert_eq!(c.stderr_tail, "");
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
        s.push(b"0123", Stream::Stdout);
        s.push(b"4567", Stream::Stdout);
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
            s.push(chunk, Stream::Stdout);
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
        s.push(b"ab", Stream::Stdout);
        s.push(&[b'x'; 5000], Stream::Stdout);
        s.push(b"yz", Stream::Stdout);
        s.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= 400);
        assert!(text.starts_with("abxxx"));
        assert!(text.ends_with("xxyz"));
        assert!(text.contains("bytes of output cut here"));
    }
}
