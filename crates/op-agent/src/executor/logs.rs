//! Run output files: `LOG_DIR/JOB/RUN_ID.log`, and their per-job retention.
//!
//! A file is created at the run's first output ([`super::output::LogFile`]): a run that writes
//! nothing has none. Run ids are UUIDv7, so file names sort in start order and the oldest files
//! are the first in name order. After every run that wrote a file the job's directory is trimmed to `keep_runs` files and
//! `keep_bytes` bytes, never touching the files of runs still in progress.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The output file of one run. Job names are validated (`[A-Za-z0-9._-]`, not `.`/`..`), so
/// the path cannot leave `log_dir`.
pub fn run_log_path(log_dir: &Path, job: &str, run_id: Uuid) -> PathBuf {
    log_dir.join(job).join(format!("{run_id}.log"))
}

/// True when the run has written no output so far, so it has no log file (it is created at the
/// first output): a missing file is then empty output, not one that retention removed.
pub fn no_output_yet(record: &op_proto::RunRecord) -> bool {
    record.status == op_proto::RunStatus::Running || record.output_bytes == 0
}

/// Deletes the oldest finished output files of one job until both limits hold.
pub fn prune(job_dir: &Path, keep_runs: usize, keep_bytes: u64, in_progress: &HashSet<Uuid>) {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    let mut files: Vec<(String, u64)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let id = Uuid::parse_str(name.strip_suffix(".log")?).ok()?;
            if in_progress.contains(&id) {
                return None;
            }
            Some((name, e.metadata().ok()?.len()))
        })
        .collect();
    files.sort();
    let mut count = files.len();
    let mut bytes: u64 = files.iter().map(|(_, len)| len).sum();
    for (name, len) in files {
        if count <= keep_runs && bytes <= keep_bytes {
            break;
        }
        if std::fs::remove_file(job_dir.join(&name)).is_ok() {
            count -= 1;
            bytes -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_by_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Uuid> = (0..5)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                Uuid::now_v7()
            })
            .collect();
        for id in &ids {
            std::fs::write(dir.path().join(format!("{id}.log")), vec![b'x'; 100]).unwrap();
        }
        std::fs::write(dir.path().join("unrelated.txt"), "keep").unwrap();
        let running: HashSet<Uuid> = [ids[0]].into();
        prune(dir.path(), 3, u64::MAX, &running);
        let left = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        // ids[0] is protected; of the other four the oldest (ids[1]) goes.
        let names = left(dir.path());
        assert!(names.contains(&format!("{}.log", ids[0])));
        assert!(!names.contains(&format!("{}.log", ids[1])));
        assert_eq!(names.len(), 5);
        prune(dir.path(), 10, 150, &HashSet::new());
        assert_eq!(
            left(dir.path()),
            vec![format!("{}.log", ids[4]), "unrelated.txt".into()]
        );
    }
}
