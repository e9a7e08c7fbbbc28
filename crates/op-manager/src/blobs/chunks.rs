//! The chunk list of a blob (issue 26, packages from peers): derived from the blob alone, so it
//! does not go through raft; each manager computes it on first need and keeps it at
//! `blobs/chunks/<sha256>.json`, next to the blob. A cached list is checked against its blob's
//! hash and size when read, and recomputed when it does not match; GC deletes lists whose blob
//! is gone.

use std::io::Read;
use std::path::{Path, PathBuf};

use op_proto::chunks::{CHUNK_SIZE, ChunkManifest};
use sha2::{Digest, Sha256};

use super::BlobStore;

/// Where the chunk list of blob `sha256` is kept.
pub fn manifest_path(blobs: &BlobStore, sha256: &str) -> PathBuf {
    chunks_dir(blobs).join(format!("{sha256}.json"))
}

pub fn chunks_dir(blobs: &BlobStore) -> PathBuf {
    let blob = blobs.path("x");
    blob.parent()
        .map(|d| d.join("chunks"))
        .unwrap_or_else(|| PathBuf::from("chunks"))
}

/// Reads the blob at `blob` (named `sha256`) in chunks of [`CHUNK_SIZE`] and hashes each, and the
/// whole. Blocking. Fails when the content does not hash to `sha256` (a damaged blob must not be
/// described as if it were right).
pub fn compute(blob: &Path, sha256: &str) -> std::io::Result<ChunkManifest> {
    let mut file = std::fs::File::open(blob)?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let mut part = Sha256::new();
        let mut in_chunk = 0u64;
        while in_chunk < CHUNK_SIZE {
            let want = (CHUNK_SIZE - in_chunk).min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            in_chunk += n as u64;
        }
        if in_chunk == 0 {
            break;
        }
        size += in_chunk;
        chunks.push(hex::encode(part.finalize()));
        if in_chunk < CHUNK_SIZE {
            break;
        }
    }
    let got = hex::encode(whole.finalize());
    if got != sha256 {
        return Err(std::io::Error::other(format!(
            "blob {sha256} on disk hashes to {got}: damaged, not describing it"
        )));
    }
    Ok(ChunkManifest {
        sha256: sha256.to_string(),
        size,
        chunk_size: CHUNK_SIZE,
        chunks,
    })
}

/// The chunk list of blob `sha256` whose file is `blob`: the cached one when it matches the
/// blob's size, else computed and cached (written to a temp file and renamed, so a reader never
/// sees half a list). Blocking.
pub fn load_or_compute(
    blobs: &BlobStore,
    blob: &Path,
    sha256: &str,
) -> std::io::Result<ChunkManifest> {
    let path = manifest_path(blobs, sha256);
    let size = std::fs::metadata(blob)?.len();
    if let Ok(text) = std::fs::read(&path)
        && let Ok(m) = serde_json::from_slice::<ChunkManifest>(&text)
        && m.sha256 == sha256
        && m.size == size
        && m.chunk_size == CHUNK_SIZE
        && m.is_consistent()
    {
        return Ok(m);
    }
    let m = compute(blob, sha256)?;
    let dir = chunks_dir(blobs);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&m).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(m)
}

/// Deletes the chunk lists of blobs that are no longer here. Blocking; returns how many.
pub fn gc(blobs: &BlobStore) -> std::io::Result<u64> {
    let dir = chunks_dir(blobs);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut deleted = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(sha) = name.strip_suffix(".json") else {
            continue;
        };
        if super::is_blob_name(sha) && !blobs.has(sha) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(content: &[u8]) -> (tempfile::TempDir, BlobStore, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let sha = hex::encode(Sha256::digest(content));
        let path = blobs.path(&sha);
        std::fs::write(&path, content).unwrap();
        (dir, blobs, path, sha)
    }

    #[test]
    fn the_list_matches_the_content_is_cached_and_collected() {
        let content: Vec<u8> = (0..(CHUNK_SIZE as usize * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let (_dir, blobs, path, sha) = store_with(&content);
        let m = load_or_compute(&blobs, &path, &sha).unwrap();
        assert_eq!((m.size, m.chunks.len()), (content.len() as u64, 3));
        for (k, h) in m.chunks.iter().enumerate() {
            let (a, b) = m.range(k).unwrap();
            assert_eq!(
                *h,
                hex::encode(Sha256::digest(&content[a as usize..b as usize]))
            );
        }
        assert!(manifest_path(&blobs, &sha).is_file());
        // A cached list that does not fit the blob is recomputed, never trusted.
        std::fs::write(manifest_path(&blobs, &sha), b"{\"garbage\":1}").unwrap();
        assert_eq!(load_or_compute(&blobs, &path, &sha).unwrap(), m);
        // Gone blob, gone list.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(gc(&blobs).unwrap(), 1);
        assert!(!manifest_path(&blobs, &sha).exists());
    }

    #[test]
    fn a_damaged_blob_gets_no_list() {
        let (_dir, blobs, path, sha) = store_with(b"hello chunks");
        std::fs::write(&path, b"hellO chunks").unwrap();
        let err = load_or_compute(&blobs, &path, &sha).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(!manifest_path(&blobs, &sha).exists());
    }
}
