//! Resumable, verified download of one package version into `download-V.part`.
//!
//! The part file survives failures and restarts: the next attempt asks for the rest with Range
//! and hashes the bytes already there first, so the sha256 covers the whole content either way.
//! A manager at its download cap answers 429; the download then waits as told plus jitter, so a
//! fleet refused at once does not come back at once. Content whose size or sha256 differs from
//! the desired state is deleted and reported, never deployed.

use std::path::Path;
use std::time::Duration;

use op_proto::package::PackageRef;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{DeployError, FetchError, Source};

/// How long to wait when a busy manager did not say.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Retry-After plus up to as much again (at least a second) of jitter.
pub(crate) fn busy_pause(retry_after: Option<Duration>) -> Duration {
    let base = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
    let spread = base.max(Duration::from_secs(1)).as_millis() as u64;
    base + Duration::from_millis(rand::rng().random_range(0..=spread))
}

/// Hashes the bytes already in the part file (at most `size`; more means it is not ours).
async fn resume_point(part: &Path, size: u64) -> Result<(u64, Sha256), DeployError> {
    let mut hasher = Sha256::new();
    let mut file = match tokio::fs::File::open(part).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, hasher)),
        Err(e) => {
            return Err(DeployError::Io {
                action: "opening",
                path: part.to_path_buf(),
                source: e,
            });
        }
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len > size {
        drop(file);
        let _ = tokio::fs::remove_file(part).await;
        return Ok((0, Sha256::new()));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = file.read(&mut buf).await.map_err(|e| DeployError::Io {
            action: "reading",
            path: part.to_path_buf(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok((done, hasher))
}

/// Downloads `pkg` into `part` until it is complete and verified. Waits out a busy manager for
/// as long as it takes; the caller cancels (drops) the future when the target changes.
pub async fn fetch(
    source: &dyn Source,
    pkg: &PackageRef,
    part: &Path,
    idle: Duration,
) -> Result<(), DeployError> {
    let io = |action: &'static str| {
        move |e: std::io::Error| DeployError::Io {
            action,
            path: part.to_path_buf(),
            source: e,
        }
    };
    let (mut have, mut hasher) = resume_point(part, pkg.size).await?;
    if have < pkg.size || pkg.size == 0 {
        let opened = loop {
            match source.open(pkg, have).await {
                Ok(o) => break o,
                Err(FetchError::Busy(after)) => {
                    let pause = busy_pause(after);
                    tracing::debug!(package = %pkg.name, ?pause, "manager busy; waiting");
                    tokio::time::sleep(pause).await;
                }
                Err(FetchError::Failed(m)) => return Err(DeployError::Download(m)),
            }
        };
        if opened.start != have {
            // The server sent everything from the start: begin again.
            have = 0;
            hasher = Sha256::new();
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(have == 0)
            .append(have > 0)
            .open(part)
            .await
            .map_err(io("opening"))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut body = opened.body;
        loop {
            let next = tokio::time::timeout(idle, futures_util::StreamExt::next(&mut body))
                .await
                .map_err(|_| DeployError::Stalled {
                    secs: idle.as_secs(),
                })?;
            let chunk = match next {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(m)) => {
                    // Keep what arrived: the next attempt resumes from there.
                    out.flush().await.map_err(io("writing"))?;
                    return Err(DeployError::Download(m));
                }
            };
            have += chunk.len() as u64;
            if have > pkg.size {
                drop(out);
                let _ = tokio::fs::remove_file(part).await;
                return Err(DeployError::Size {
                    expected: pkg.size,
                    got: have,
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(io("writing"))?;
        }
        out.flush().await.map_err(io("writing"))?;
        out.into_inner().sync_all().await.map_err(io("writing"))?;
    }
    if have != pkg.size {
        return Err(DeployError::Size {
            expected: pkg.size,
            got: have,
        });
    }
    let got = hex::encode(hasher.finalize());
    if got != pkg.sha256 {
        let _ = tokio::fs::remove_file(part).await;
        return Err(DeployError::Checksum {
            expected: pkg.sha256.clone(),
            got,
        });
    }
    Ok(())
}
