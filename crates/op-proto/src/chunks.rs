//! Package chunks (issue 26): a version's content as a list of fixed-size pieces, each named by
//! its sha256, so that a piece fetched from any source (a manager or, later, a peer agent) can be
//! verified on its own before it is written.
//!
//! The list is derived data: every manager computes the same list from the same blob (the blob
//! is named by its sha256, the chunk size is fixed here), so it is not written through raft; a
//! manager computes it on first need and keeps it beside the blob.

use serde::{Deserialize, Serialize};

/// Size of every chunk but the last (4 MiB).
pub const CHUNK_SIZE: u64 = 4 << 20;

/// The chunk list of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkManifest {
    /// sha256 of the whole blob.
    pub sha256: String,
    /// Bytes in the blob.
    pub size: u64,
    /// Bytes per chunk (the last one may be shorter).
    pub chunk_size: u64,
    /// sha256 (lowercase hex) of each chunk, in order.
    pub chunks: Vec<String>,
}

impl ChunkManifest {
    /// Byte range `start..end` of chunk `k`, or None past the end.
    pub fn range(&self, k: usize) -> Option<(u64, u64)> {
        chunk_range(self.size, self.chunk_size, k)
    }

    /// True when the list is consistent with its size and chunk size (a list read from disk or
    /// received over the wire is checked before use).
    pub fn is_consistent(&self) -> bool {
        self.chunk_size > 0
            && self.chunks.len() as u64 == chunk_count(self.size, self.chunk_size)
            && self
                .chunks
                .iter()
                .chain(std::iter::once(&self.sha256))
                .all(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    }
}

/// How many chunks a blob of `size` bytes has (an empty blob has none).
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size.max(1))
}

/// Byte range `start..end` of chunk `k` of a blob of `size` bytes.
pub fn chunk_range(size: u64, chunk_size: u64, k: usize) -> Option<(u64, u64)> {
    let start = (k as u64).checked_mul(chunk_size)?;
    (start < size).then(|| (start, (start + chunk_size).min(size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_blob_exactly() {
        let size = 2 * CHUNK_SIZE + 5;
        assert_eq!(chunk_count(size, CHUNK_SIZE), 3);
        assert_eq!(chunk_range(size, CHUNK_SIZE, 0), Some((0, CHUNK_SIZE)));
        assert_eq!(
            chunk_range(size, CHUNK_SIZE, 2),
            Some((2 * CHUNK_SIZE, size))
        );
        assert_eq!(chunk_range(size, CHUNK_SIZE, 3), None);
        assert_eq!(chunk_count(0, CHUNK_SIZE), 0);
        assert_eq!(chunk_count(CHUNK_SIZE, CHUNK_SIZE), 1);
        let h = "a".repeat(64);
        let m = ChunkManifest {
            sha256: h.clone(),
            size,
            chunk_size: CHUNK_SIZE,
            chunks: vec![h.clone(); 3],
        };
        assert!(m.is_consistent());
        let short = ChunkManifest {
            chunks: vec![h; 2],
            ..m
        };
        assert!(!short.is_consistent());
    }
}
