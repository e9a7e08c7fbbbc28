//! `agentcli download NAME [VERSION] [--out FILE]`: one version's content, checked.
//!
//! An existing file is never replaced without `--force`. The content goes to a temp file beside the destination and is renamed into place only after
//! its size and sha256 match what the manager stored, so a failed or tampered download never
//! leaves a file that looks complete. When the manager is at its download cap (429) the command
//! waits as told, with jitter, instead of failing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use op_client::ClientError;
use op_proto::package::PackageVersion;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Ctx;
use crate::Outcome;
use crate::cli::Format;
use crate::output::{human_bytes, transfer_bar, write_json};

/// A chunk must arrive within this long, or the download is abandoned.
const IDLE: Duration = Duration::from_secs(60);
/// How long to keep retrying a manager at its download cap.
const BUSY_FOR: Duration = Duration::from_secs(600);

#[derive(Serialize)]
struct Downloaded<'a> {
    #[serde(flatten)]
    version: &'a PackageVersion,
    path: String,
}

/// Picks `version`, or the current one, from every version of `name`.
async fn pick(ctx: &Ctx, name: &str, version: Option<u64>) -> anyhow::Result<PackageVersion> {
    let versions = match ctx.client.package_versions(name).await {
        // The seed's `download VERSION` had no package argument.
        Err(ClientError::Api { status: 404, .. }) if name.chars().all(|c| c.is_ascii_digit()) => {
            bail!(
                "no package named {name}; download takes the package first: agentcli download \
                 NAME [VERSION], e.g. agentcli download test.py {name}"
            )
        }
        other => other.map_err(|e| ctx.conn.explain(e))?,
    };
    let found = match version {
        Some(v) => versions.iter().find(|p| p.version == v),
        None => versions.iter().find(|p| p.current),
    };
    found.cloned().ok_or_else(|| match version {
        Some(v) => anyhow!(
            "{name} has no version {v}; versions: {}",
            versions
                .iter()
                .map(|p| p.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => anyhow!("{name} has no current version"),
    })
}

pub async fn run(
    ctx: &Ctx,
    name: &str,
    version: Option<u64>,
    out: Option<&Path>,
    force: bool,
) -> anyhow::Result<Outcome> {
    let v = pick(ctx, name, version).await?;
    let dest = out.map_or_else(|| PathBuf::from(&v.name), Path::to_path_buf);
    // Checked before the transfer so nothing is fetched for nothing; the rename below would
    // replace the file without a word.
    if !force && std::fs::symlink_metadata(&dest).is_ok() {
        bail!(
            "{} already exists; pass --force to overwrite it, or --out FILE to write elsewhere",
            dest.display()
        );
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} is not a file path", dest.display()))?;
    let tmp = dir.join(format!(".{file_name}.part-{}", std::process::id()));
    let result = fetch(ctx, &v, &tmp).await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    let mut stdout = crate::output::stdout();
    if ctx.format == Format::Json {
        write_json(
            &mut stdout,
            &Downloaded {
                version: &v,
                path: dest.display().to_string(),
            },
        )?;
    } else {
        writeln!(
            stdout,
            "{} {} -> {} ({}, sha256 {} verified)",
            v.name,
            v.version,
            dest.display(),
            human_bytes(v.size),
            v.sha256
        )?;
    }
    Ok(Outcome::Ok)
}

async fn fetch(ctx: &Ctx, v: &PackageVersion, tmp: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut content = loop {
        match ctx.client.package_content(&v.name, v.version, 0).await {
            Ok(c) => break c,
            Err(ClientError::Busy { retry_after, .. }) if started.elapsed() < BUSY_FOR => {
                let base = retry_after.unwrap_or(Duration::from_secs(1));
                let jitter = rand::rng().random_range(0..=base.as_millis() as u64);
                tokio::time::sleep(base + Duration::from_millis(jitter)).await;
            }
            Err(e) => return Err(ctx.conn.explain(e)),
        }
    };
    let mut file = tokio::fs::File::create(tmp)
        .await
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let bar = transfer_bar(Some(v.size), ctx.format == Format::Json, &v.name);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let chunk = tokio::time::timeout(IDLE, content.next_chunk())
            .await
            .map_err(|_| anyhow!("the download stalled (nothing for {} s)", IDLE.as_secs()))?
            .map_err(|e| ctx.conn.explain(e))?;
        let Some(chunk) = chunk else { break };
        hasher.update(&chunk);
        size += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    bar.finish_and_clear();
    file.sync_all()
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let sha = hex::encode(hasher.finalize());
    if size != v.size || sha != v.sha256 {
        bail!(
            "{} {}: received {size} bytes with sha256 {sha}, but the manager stored {} bytes with sha256 {}; the copy on the manager is damaged or the transfer was altered",
            v.name,
            v.version,
            v.size,
            v.sha256
        );
    }
    Ok(())
}
