//! `agentcli upload FILE|DIR [DEPLOYDIR]`: a new version of a package.
//!
//! A file is streamed as it is; a directory is packed as `NAME.tar.gz` (its entries under one top
//! directory, NAME) on a blocking thread and streamed while it is being written, so nothing lands
//! in the working directory and memory stays bounded whatever the directory's size. The manager
//! hashes what it receives and answers with the version and sha256, which are printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use op_client::UploadTarget;
use op_proto::package::{
    PackageVersion, describe_target, is_everywhere, parse_target, validate_deploy_dir,
    validate_package_name,
};

use super::Ctx;
use crate::Outcome;
use crate::cli::{Format, UploadTargetArgs};
use crate::output::{Table, local_time, transfer_bar, write_json};

/// Bytes per chunk sent; also the buffer of the archive writer.
const CHUNK: usize = 256 << 10;

pub async fn run(
    ctx: &Ctx,
    path: &Path,
    deploy_dir: Option<&str>,
    target_args: &UploadTargetArgs,
    rollout: &crate::cli::RolloutArgs,
) -> anyhow::Result<Outcome> {
    let query = rollout.query();
    // Checked here first, so a bad plan never sends the content.
    rollout.check().map_err(|e| anyhow!(e))?;
    if let Some(dir) = deploy_dir {
        validate_deploy_dir(dir).map_err(|e| anyhow!("deploy dir {e}"))?;
    }
    // Checked here too, so a bad entry fails before anything is sent.
    parse_target(
        &target_args.hosts,
        &target_args.exclude,
        &target_args.labels,
    )
    .map_err(|e| anyhow!(e))?;
    let target = UploadTarget {
        hosts: target_args.hosts.clone(),
        exclude: target_args.exclude.clone(),
        labels: target_args.labels.clone(),
    };
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json = ctx.format == Format::Json;
    let version = if meta.is_dir() {
        let dir = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let base = base_name(&dir)?;
        let name = format!("{base}.tar.gz");
        check_name(&name, path)?;
        let bar = transfer_bar(None, json, &name);
        let stream = archive_stream(dir, base).map({
            let bar = bar.clone();
            move |chunk| {
                if let Ok(c) = &chunk {
                    bar.inc(c.len() as u64);
                }
                chunk
            }
        });
        let result = ctx
            .call(
                ctx.client
                    .upload_package_full(&name, deploy_dir, &target, None, stream, &query),
            )
            .await;
        bar.finish_and_clear();
        result?
    } else {
        let name = base_name(path)?;
        check_name(&name, path)?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let bar = transfer_bar(Some(meta.len()), json, &name);
        let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).map({
            let bar = bar.clone();
            move |chunk| {
                if let Ok(c) = &chunk {
                    bar.inc(c.len() as u64);
                }
                chunk
            }
        });
        let result = ctx
            .call(ctx.client.upload_package_full(
                &name,
                deploy_dir,
                &target,
                Some(meta.len()),
                stream,
                &query,
            ))
            .await;
        bar.finish_and_clear();
        result?
    };
    let mut out = crate::output::stdout();
    if json {
        write_json(&mut out, &version)?;
    } else {
        uploaded_table(&version).write(&mut out)?;
        if !is_everywhere(&version.target) {
            writeln!(out, "target: {}", describe_target(&version.target))?;
        }
        if rollout.rollout.is_some() {
            writeln!(
                out,
                "staged rollout started; follow it with: agentcli rollout list"
            )?;
        } else if let Ok(d) = ctx.client.package_rollout(&version.name).await {
            // Staged by the package's default rollout (`rollout default`).
            writeln!(
                out,
                "staged by the package's default rollout ({}); follow it with: agentcli rollout list",
                d.plan.stages_text()
            )?;
        }
        out.flush()?;
    }
    Ok(Outcome::Ok)
}

/// The one-row answer: what was stored.
pub fn uploaded_table(v: &PackageVersion) -> Table {
    let mut t = Table::new(&[
        "PACKAGENAME",
        "PACKAGEVERSION",
        "TIMESTAMP",
        "DEPLOYDIR",
        "SIZE",
        "SHA256",
    ]);
    t.row([
        v.name.clone(),
        v.version.to_string(),
        local_time(v.uploaded_at),
        v.deploy_dir.clone(),
        v.size.to_string(),
        v.sha256.clone(),
    ]);
    t
}

fn base_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "{} has no file name to use as the package name",
                path.display()
            )
        })
}

fn check_name(name: &str, path: &Path) -> anyhow::Result<()> {
    validate_package_name(name).map_err(|e| {
        anyhow!(
            "{}: package name {name:?} {e}; rename it (letters, digits, '.', '_', '-')",
            path.display()
        )
    })?;
    // Checked here too (the manager refuses it as well), so the reason is not lost in a broken
    // pipe while a large body is still being sent.
    if op_proto::agent_upgrade::is_reserved(name) {
        return Err(anyhow!(
            "{}: {name} is an agent release name: upload agent releases with agentcli agent upgrade start",
            path.display()
        ));
    }
    Ok(())
}

/// A `Write` that hands full buffers to the upload through a bounded channel, so the archive is
/// produced only as fast as it is sent.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(full))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `DIR` as a gzipped tar whose entries all sit under `top/`; symlinks stay symlinks
/// (agents refuse ones that point outside the package).
pub fn write_archive(dir: &Path, top: &str, out: impl Write) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(top, dir)?;
    tar.into_inner()?.finish()?;
    Ok(())
}

/// The archive of `dir` as a stream of chunks, produced on a blocking thread.
fn archive_stream(
    dir: PathBuf,
    top: String,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write_archive(&dir, &top, &mut writer).and_then(|()| writer.send());
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                "packing {}: {e}",
                dir.display()
            ))));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_packed_under_one_top_dir() {
        let dir = tempfile::tempdir().unwrap();
        let proj = dir.path().join("proj");
        std::fs::create_dir_all(proj.join("lib")).unwrap();
        std::fs::write(proj.join("main.py"), "print(1)\n").unwrap();
        std::fs::write(proj.join("lib/util.py"), "X = 1\n").unwrap();
        std::os::unix::fs::symlink("lib/util.py", proj.join("link.py")).unwrap();
        let mut bytes = Vec::new();
        write_archive(&proj, "proj", &mut bytes).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names: Vec<(String, bool)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type().is_symlink(),
                )
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("proj/".to_string(), false),
                ("proj/lib".to_string(), false),
                ("proj/lib/util.py".to_string(), false),
                ("proj/link.py".to_string(), true),
                ("proj/main.py".to_string(), false),
            ]
        );
    }

    #[test]
    fn uploaded_row() {
        let v = PackageVersion {
            name: "test.py".into(),
            version: 1_730_000_000,
            sha256: "ab".repeat(32),
            size: 12,
            deploy_dir: "/data/op-agent/src".into(),
            uploaded_at: chrono::DateTime::from_timestamp(1_730_000_000, 0).unwrap(),
            uploader: "admin".into(),
            current: true,
            target: Default::default(),
        };
        let mut out = Vec::new();
        uploaded_table(&v).write(&mut out).unwrap();
        let ts = local_time(v.uploaded_at);
        let sha = "ab".repeat(32);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "PACKAGENAME\tPACKAGEVERSION\tTIMESTAMP          \tDEPLOYDIR         \tSIZE\tSHA256\n\
                 test.py    \t1730000000    \t{ts}\t/data/op-agent/src\t12  \t{sha}\n"
            )
        );
    }
}
